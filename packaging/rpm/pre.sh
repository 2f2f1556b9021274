# postern %pre: the service account must exist before the files are unpacked,
# or rpm falls back to group root for the files owned by group postern.
getent group postern >/dev/null || groupadd -r postern
getent passwd postern >/dev/null ||
    useradd -r -g postern -d /nonexistent -M -s /usr/sbin/nologin -c "postern mail proxy" postern
exit 0
