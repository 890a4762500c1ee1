"""copyhunt: find where registered images are used on the web, and report it to their owners."""

__version__ = "0.1.0"
