"""Plugins: the hook contract, what a plugin registers, and the registry that loads them."""
