"""Thin click commands: parse options, call one library function, turn user errors into one-line messages."""
