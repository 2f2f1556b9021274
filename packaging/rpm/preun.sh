# postern %preun ($1: 0 on erase, 1 on upgrade): on erase, disable and stop
# whichever mode is set up.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl --no-reload disable --now postern.service postern.socket postern-activated.service >/dev/null 2>&1 || :
    else
        systemctl --no-reload disable postern.service postern.socket postern-activated.service >/dev/null 2>&1 || :
    fi
fi
exit 0
