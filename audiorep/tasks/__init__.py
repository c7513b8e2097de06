"""HEAR-format tasks: the format (format.py), the offline suite builder, the importer, checks and their command."""
