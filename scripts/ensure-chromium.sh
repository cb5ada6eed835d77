#!/usr/bin/env bash
# Install Debian's chromium + chromedriver for the web page test, when possible.
# Never fails: without a browser that one test skips, saying why.
set -u
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing chromium and chromium-driver for the browser test ..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
    >/tmp/atelier-chromium-install.log 2>&1 \
    || echo "could not install chromium (see /tmp/atelier-chromium-install.log); the browser test will skip"
else
  echo "chromium not found and not installable here (needs root and apt-get); the browser test will skip"
fi
exit 0
