"""deploy -- the launcher and per-host supervisor, cluster files, gunicorn settings, unit files.

It spawns the cluster's processes and imports none of the apps.
"""
