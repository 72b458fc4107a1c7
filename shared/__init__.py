"""The certbus vocabulary: subjects, streams, events, and the bus, database and settings helpers.

Nothing here imports from ``services``; every service imports from here.
"""
