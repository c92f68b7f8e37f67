"""Referee: zohosim driven by Zoho's official Python SDK (zohocrmsdk8-0 7.0.0).

Run: `.venv/bin/pytest tests/referee -q`. Each SDK scenario runs in its own interpreter
(`sdk_driver.py`, invoked by `sdkrun.run_sdk`); findings go to /work/notes/referee-findings.md.
"""
