#!/usr/bin/env python3
"""Test plugin registering the option `dup-opt`; a test copies it under a second name so
that two plugins register the same option, which must abort startup."""
from pyln.client import Plugin

plugin = Plugin()
plugin.add_option("dup-opt", "x", "an option two plugins will fight over")
plugin.run()
