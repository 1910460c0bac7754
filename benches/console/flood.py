# Opens N TCP connections to the console that never send a byte and holds them (benches/console/flood.sh).
import socket, sys, time, errno
port, count, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
socks = []
for i in range(count):
    s = socket.socket(); s.setblocking(False)
    try: s.connect(("127.0.0.1", port))
    except BlockingIOError: pass
    socks.append(s)
time.sleep(hold)
print(f"flood: {len(socks)} sockets opened, held {hold}s", flush=True)
