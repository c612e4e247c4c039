"""Verify a bundle's model files on other CPU architectures (ARM64 under qemu-user emulation)."""
