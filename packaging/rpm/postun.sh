# postern %postun ($1: 0 on erase, 1 on upgrade). The postern account is kept
# on erase, as Fedora's packaging guidelines ask (files it owned may remain).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart postern.service postern-activated.service >/dev/null 2>&1 || :
    fi
fi
if [ "$1" -eq 0 ]; then
    rm -rf /run/postern
    # Not in the package's file list (see %post); gone once empty. Modified
    # configuration files stay as *.rpmsave.
    rmdir /etc/postern 2>/dev/null || :
fi
exit 0
