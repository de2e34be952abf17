"""Capacity beyond memory (issue 15): what a replica costs as its group stores more.

    python -m bench.capacity [--sizes 0.5,1,2] [--value-size 10240] [--columns 100]
                             [--clients 16] [--snapshot-entries 5000] [--dir DIR]
                             [--kv-ab REV [--kv-runs 5]] [--json]

Starts one real group of 3 replicas (``python -m shards.node`` processes, data
directories in a temporary directory, loopback only) and fills it through one
``raftkv.Client``, ``--clients`` puts at a time, with inline cells:
``--value-size``-byte values (below the 16 KiB blob threshold, so they live in
the state machine, as mail bodies do), ``--columns`` to a row.  Up to each
size of ``--sizes`` (GB of values, 10^9 bytes; filled cumulatively) it measures
(:mod:`bench.capacity.steps` says exactly how):

* ``RssAnon`` and ``RssFile`` of every replica (``/proc/PID/status``; mapped
  file pages count in RSS but are the kernel's cache, so ``RssAnon`` is the
  figure the issue bounds);
* a snapshot: entries are written one at a time until every replica's log
  passes ``[raft] snapshot_entries``; each replica's time from that write to its
  log seen compacted, and its snapshot's size (status ``snapshot_bytes``);
* each replica's data directory on disk (allocated blocks), after the snapshot;
* a follower's restart, after SIGTERM and after SIGKILL: until it answers and
  until it has applied the leader's commit index;
* a wiped follower's catch-up (its data directory removed; the leader must send
  its snapshot): until its snapshot is in place and until it has applied the
  leader's commit index, whether any replica's term or the leader changed, and
  the longest gap between two of the leader's messages at the other follower.

Prints a markdown table, a column per size, and the issue's aims checked at the
largest size.  ``--kv-ab REV`` then runs ``bench.kv`` on REV and on this tree,
interleaved, ``--kv-runs`` times each (``bench.ab``, which
``python -m bench.ab --before REV`` runs alone) and adds its table.  Every wait
has a deadline (``--step-timeout``; a fill ``--fill-timeout``); every process
and the temporary directory are removed at the end, on Ctrl-C and SIGTERM too.
"""
