"""The demo world and the demo model trained on it offline (issue 15); docs/demo_model.md. No Django."""
