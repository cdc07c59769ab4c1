"""A Snakemake run's log as data: when each job started and finished, and the run's elapsed time.

Shared by benchmarks/main_job.py (the main job's record) and benchmarks/grid.py
(``workflow-run``: a packed grid's span). A job's block in the log reads::

    [Mon Dec  7 14:27:57 2026]
    localrule train:
        ...
        jobid: 25
        ...
        wildcards: task=breastmnist, cell=width~48, fold=1
    ...
    [Mon Dec  7 14:36:09 2026]
    Finished jobid: 25 (Rule: train)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_RULE = re.compile(r"^(?:local)?rule (\w+):$")
_JOBID = re.compile(r"^jobid: (\d+)$")
_WILDCARDS = re.compile(r"^wildcards: (.*)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: \w+\)$")
_ELAPSED = re.compile(r"^Elapsed time: (\d+):(\d\d):(\d\d(?:\.\d+)?)$")


@dataclass(frozen=True)
class Job:
    rule: str
    wildcards: str  # as the log gives them: "task=breastmnist, cell=width~48, fold=0"
    start: datetime
    end: datetime

    @property
    def name(self) -> str:
        """'train/breastmnist/width~48/fold0', as the job's benchmark file is named."""
        parts = dict(p.split("=", 1) for p in self.wildcards.split(", ") if "=" in p)
        fold = [f"fold{parts.pop('fold')}"] if "fold" in parts else []
        return "/".join([self.rule, *parts.values(), *fold])

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def read(text: str) -> tuple[float | None, list[Job]]:
    """(Snakemake's elapsed seconds, None if the run did not finish; the finished jobs in the
    order they started, the target rule `all` left out). The log stamps whole seconds."""
    stamp = datetime.min
    rule: str | None = None
    started: dict[int, tuple[str, datetime]] = {}  # jobid -> rule, start (in log order)
    wildcards: dict[int, str] = {}
    block = -1  # the job whose block is being read (its wildcards follow its jobid)
    order: list[int] = []  # jobids as they started
    done: dict[int, Job] = {}
    elapsed = None
    for raw in text.splitlines():
        line = raw.strip()
        if m := _STAMP.match(line):
            stamp = datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
        elif m := _RULE.match(line):
            rule = m.group(1)
        elif (m := _JOBID.match(line)) and rule is not None:
            block = int(m.group(1))
            started[block], rule = (rule, stamp), None
            order.append(block)
        elif m := _WILDCARDS.match(line):
            wildcards[block] = m.group(1)
        elif (m := _FINISHED.match(line)) and int(m.group(1)) in started:
            jobid = int(m.group(1))
            name, start = started[jobid]
            done[jobid] = Job(name, wildcards.get(jobid, ""), start, stamp)
        elif m := _ELAPSED.match(line):
            h, mnt, s = m.groups()
            elapsed = int(h) * 3600 + int(mnt) * 60 + float(s)
    jobs = [done[i] for i in order if i in done and done[i].rule != "all"]
    return elapsed, sorted(jobs, key=lambda j: j.start)  # stable: ties keep the log's order
