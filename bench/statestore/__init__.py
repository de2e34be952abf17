"""The state machine's table on disk: LMDB against SQLite (WAL), side by side, in one run.

    python -m bench.statestore [--cells 200000] [--value-size 100,10240] [--cache-mb 64]
                               [--repeats 3] [--json]

Each engine holds the same data set under the key layout of
:mod:`raftkv.diskkeys` and is used as a replica would use it
(:mod:`bench.statestore.engines` says how, and with which durability settings):

* apply: batches of 1, 16 and 64 commands -- puts of small and of large values,
  cputs that read and then write -- each batch one transaction that also writes
  the applied index and every command's answer in the exactly-once table;
* reads from another thread while a writer applies at ``--writer-rate``: a
  point get, ``get_row`` of a 50-column row, a page of ``--scan-rows`` rows;
* a consistent snapshot on a background thread while the writer applies: time
  per GB, and the writer's longest stall meanwhile (the tick thread's budget is
  20 ms);
* in fresh processes: anonymous memory (``RssAnon``) with the data set several
  times the configured cache, the time to open the store and answer a get, and
  kill -9 in the middle of writes followed by a check of what survived;
* the files' size on disk.

Lines show the median of ``--repeats`` runs and the ratio lmdb/sqlite; the
engines take turns within each repeat.  docs/state-on-disk.md has the results
and the decision they led to.
"""
