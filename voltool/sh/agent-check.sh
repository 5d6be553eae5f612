#!/bin/sh
# Whether this image can run the agent: $1, a Python program, checks the
# interpreter (voltool/engine/agent_image.py) and prints one JSON line; then
# the agent's own selftest prints another.
python3 -I -c "$1" && python3 -I -m voltool_agent selftest
