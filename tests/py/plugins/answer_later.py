"""Shared by the test plugins that answer an async hook after a delay (hold_plugin.py,
pay_rules.py); a module, not a plugin."""
import threading
import time


def answer_later(request, seconds, result):
    """Sets `result` on the hook `request` after `seconds`, from a daemon thread."""
    def run():
        time.sleep(seconds)
        request.set_result(result)
    threading.Thread(target=run, daemon=True).start()
