#!/usr/bin/env python3
"""Summarise a kosoku/Autobahn index.json: behaviours per group, then every case that is
not OK with the reason its report gives. Exit 1 if a case of groups 1-7, 9 or 10 is not OK,
except NON-STRICT in 6.4.3 and 6.4.4 (see the README's ws section).

    summary.py reports/index.json
"""
import collections, json, os, sys

ALLOWED = {("6.4.3", "NON-STRICT"), ("6.4.4", "NON-STRICT")}
MUST_PASS = {"1", "2", "3", "4", "5", "6", "7", "9", "10"}


def key(case):
    return tuple(int(p) for p in case.split("."))


def main(path):
    index = json.load(open(path))
    (agent, cases), = index.items()
    directory = os.path.dirname(path)
    totals = collections.Counter(c["behavior"] for c in cases.values())
    print(f"{len(cases)} cases: " + ", ".join(f"{b} {n}" for b, n in sorted(totals.items())))
    groups = collections.defaultdict(collections.Counter)
    for case, result in cases.items():
        groups[case.split(".")[0]][result["behavior"]] += 1
    print("| group | behaviours |\n| --- | --- |")
    for group in sorted(groups, key=int):
        shown = ", ".join(f"{b} {n}" for b, n in sorted(groups[group].items()))
        print(f"| {group} | {shown} |")
    bad = 0
    for case in sorted(cases, key=key):
        result = cases[case]
        behaviour = result["behavior"]
        if behaviour in ("OK", "UNIMPLEMENTED") and result["behaviorClose"] in ("OK", "UNIMPLEMENTED"):
            continue
        reason = ""
        try:
            report = json.load(open(os.path.join(directory, result["reportfile"])))
            reason = report.get("result", "") + " / " + report.get("resultClose", "")
        except (OSError, ValueError):
            pass
        print(f"- {case}: {behaviour} (close: {result['behaviorClose']}, "
              f"remote code {result.get('remoteCloseCode')}): {reason}")
        group = case.split(".")[0]
        if group in MUST_PASS and behaviour != "INFORMATIONAL" and (case, behaviour) not in ALLOWED:
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
