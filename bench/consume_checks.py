"""Correctness checks of a live case, shared by the reports of bench/live.sh
and bench/clients.sh.

A case is one object of the script's results.jsonl (see record_case and
run_fanout in bench/common.sh): "consumers" holds what every
`chronomerge_loadgen consume` connection reported (null for a process that
printed nothing), "daemon_rc" the daemon's exit status on SIGTERM. Each
check appends its verdict, in words, to `checks` and returns whether it
passed.
"""

import os


def fmt_n(n):
    return "{:,}".format(int(n))


def where(r):
    """The case's directory (configs, logs, reports), relative if shorter."""
    d = r.get("dir", "")
    rel = os.path.relpath(d) if d else d
    return rel if len(rel) < len(d) else d


def daemon_exit(label, r, checks):
    """The daemon must exit 0 on SIGTERM, and must never die of a client leaving."""
    rc = r.get("daemon_rc", 0)
    if rc == 0:
        return True
    why = ""
    if rc == 141:
        why = (" (killed by SIGPIPE: a client had disconnected and the daemon wrote to its"
               " socket; spec §6 says the client is dropped and the daemon keeps running)")
    checks.append("%s: FAIL, daemon exit status %d%s; log: %s/daemon.log"
                  % (label, rc, why, where(r)))
    return False


def client_problems(c, expected, markers):
    """What is wrong with one client's report, as a list of phrases."""
    problems = []
    if c["records"] != expected:
        problems.append("%s of %s records" % (fmt_n(c["records"]), fmt_n(expected)))
    if c["markers"] != markers:
        problems.append("%d of %d end markers (the last ones arrive with the SIGTERM drain)"
                        % (c["markers"], markers))
    if not c["eof"]:
        problems.append("the connection was not closed after the SIGTERM drain"
                        + (" (timed out)" if c["timed_out"] else ""))
    if c["out_of_order"]:
        problems.append("%d out of order" % c["out_of_order"])
    if c["seq_gaps"] or c["seq_repeats"]:
        problems.append("%d missing, %d repeated (per-vehicle seq)" % (c["seq_gaps"], c["seq_repeats"]))
    if c["unparsed"]:
        problems.append("%d lines without a key" % c["unparsed"])
    if c.get("error"):
        problems.append(c["error"])
    return problems


def check_consumers(label, r, markers, checks, clients=1):
    """Every client got all r["expected"] records, exactly once, in order,
    and `markers` end markers before the daemon closed it; the daemon exited
    0. `clients` is how many clients the case ran. One line for the whole
    case when all passed, one per failing client otherwise."""
    ok = True
    reports = r["consumers"]
    got = [c for c in reports if c is not None]
    if len(got) != clients:
        checks.append("%s: FAIL, %d of %d clients reported (a reader process crashed? see %s)"
                      % (label, len(got), clients, where(r)))
        ok = False
    for i, c in enumerate(reports):
        if c is None:
            continue
        problems = client_problems(c, r["expected"], markers)
        if problems:
            ok = False
            checks.append("%s client %d: FAIL, %s%s" % (label, i, "; ".join(problems),
                          (" (first: %s)" % c["first_problem"]) if c.get("first_problem") else ""))
    if ok:
        checks.append("%s: OK, %s %s records, in order, each vehicle's seq complete"
                      % (label, "the client received" if clients == 1
                         else "each of the %d clients received" % clients, fmt_n(r["expected"])))
    if not daemon_exit(label, r, checks):
        ok = False
    return ok
