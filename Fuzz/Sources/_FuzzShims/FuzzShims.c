// Empty: the target exists for its header.
