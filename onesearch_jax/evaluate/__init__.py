"""Offline evaluation: ranking metrics per query and segment labels for test sessions."""
