"""Block format, object stores and the column codecs shared by head and blocks."""
