#!/bin/sh
# Whether this image can run voltool's helper programs: a shell, and a writable /tmp.
t=/tmp/.voltool-probe-$$ && : > "$t" && rm -f -- "$t"
