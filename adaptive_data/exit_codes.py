"""Exit codes of ``python -m adaptive_data.main`` (sysexits-style), for schedulers and
launch scripts that decide whether to rerun a job.

====  ==========================  ==============================================
code  name                        meaning; what to do
====  ==========================  ==============================================
0     -                           finished
1     -                           any other error (the message says which)
65    NO_RESTORABLE_CHECKPOINT    no checkpoint of the workdir restores; see message
73    WORKDIR_IN_USE              another live run holds the workdir (its host, pid
                                  and start are named); wait for it, stop it, or use
                                  another --workdir. Nothing was written
74    STORAGE                     a checkpoint/metrics write failed (disk full,
                                  read-only); free space, rerun the same command
75    PREEMPTED                   SIGTERM: checkpoint saved; rerun the same command
76    PEER_LOST                   another process of a multi-process run died;
                                  relaunch all processes with the same command
78    BAD_CONFIG                  a config value out of range, or a workdir resumed
                                  with a different config; fix the config
====  ==========================  ==============================================

Codes 74, 75 and 76 mean "rerun the same command" (after fixing the disk for 74).
"""

NO_RESTORABLE_CHECKPOINT = 65
WORKDIR_IN_USE = 73
STORAGE = 74
PREEMPTED = 75
PEER_LOST = 76
BAD_CONFIG = 78
