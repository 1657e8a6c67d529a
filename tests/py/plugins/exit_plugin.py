#!/usr/bin/env python3
"""Test plugin that exits before answering getmanifest (a broken plugin)."""
import sys

sys.stderr.write("exit_plugin: exiting on purpose before getmanifest\n")
sys.exit(1)
