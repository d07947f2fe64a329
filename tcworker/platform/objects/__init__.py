"""Object service of the local platform: uploads, downloads, content on disk."""
