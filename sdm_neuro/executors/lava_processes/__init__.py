"""Custom Lava processes (numpy-only process models). Kept in their own folder: Lava imports
every module beside a process to find its models."""
