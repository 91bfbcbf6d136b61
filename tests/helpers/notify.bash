# notify_listener: a NOTIFY_SOCKET ($NOTIFY, default $T/notify.sock): a
# unix datagram socket that appends each message it receives to $NOTES
# (default $T/notify.out), every line prefixed with the sender's pid
# ("4242 READY=1"), as systemd sees it (SO_PASSCRED).
notify_listener() {
	NOTIFY=${NOTIFY:-$T/notify.sock}
	NOTES=${NOTES:-$T/notify.out}
	start_bg notify python3 -c '
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind(sys.argv[1])
out = open(sys.argv[2], "a", buffering=1)
open(sys.argv[2] + ".ready", "w").close()
while True:
    data, anc, flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(12))
    pid = "?"
    for level, kind, d in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = str(struct.unpack("iII", d[:12])[0])
    for line in data.decode(errors="replace").split("\n"):
        if line:
            out.write(pid + " " + line + "\n")
' "$NOTIFY" "$NOTES"
	wait_for -t 10 test -e "$NOTES.ready"
}
