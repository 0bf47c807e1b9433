#!/usr/bin/env bash
# The SFTP adapter's tests start a real OpenSSH server (sshd + sftp-server) from Debian's openssh-server package.
# Idempotent: does nothing when /usr/sbin/sshd is there; never starts or enables the system's sshd service.
set -u
if [ -x /usr/sbin/sshd ] && { [ -x /usr/lib/openssh/sftp-server ] || [ -x /usr/libexec/openssh/sftp-server ]; }; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "scripts/deps/sftp.sh: /usr/sbin/sshd is missing; install Debian's openssh-server by hand" \
         "(apt-get install openssh-server). The SFTP tests skip without it." >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d 101 keeps the package's postinst from starting an sshd on port 22: the tests start their own.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && made_policy=1
fi
wait_lock=(-o DPkg::Lock::Timeout=120)  # another install (a second deps script, unattended upgrades) may hold it
install() { apt-get "${wait_lock[@]}" install -y -q --no-install-recommends openssh-server >/dev/null; }
if ! install; then
    # an old or empty package list: refresh it once, then try again
    apt-get "${wait_lock[@]}" update -q >/dev/null && install || echo "scripts/deps/sftp.sh: apt-get install" \
        "openssh-server failed; the SFTP tests skip without it." >&2
fi
[ "$made_policy" = 1 ] && rm -f "$policy"
exit 0
