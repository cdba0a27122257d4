#!/usr/bin/env bash
# Best effort: put Debian's headless Chromium on the machine for the HTML report test.
# Runs only in CI or as root with apt-get; otherwise that test skips with a reason.
set -u
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1 && [ "${CI:-}" = "true" ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "chromium could not be installed; the HTML render test will skip"
fi
exit 0
