# postern %post ($1: 1 on install, 2 on upgrade). No %systemd_* macros without
# rpmbuild, so this is what they would expand to.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    # Enabled or not as the distribution's presets say; works without a running
    # systemd.
    systemctl --no-reload preset postern.service >/dev/null 2>&1 || :
fi
# cargo-generate-rpm 0.21.1 cannot package a directory entry (its rpm crate
# rejects it), so /etc/postern gets its owner and mode here.
chgrp postern /etc/postern && chmod 0750 /etc/postern
systemd-tmpfiles --create postern.conf >/dev/null 2>&1 || :
exit 0
