#!/usr/bin/env python3
"""Test plugin that never answers getmanifest (it sleeps without reading stdin)."""
import time

time.sleep(3600)
