# A misbehaving RTSP camera for the abuse figures (issue 11): answers OPTIONS normally and
# DESCRIBE with a non-SDP body of SIZE bytes sent as application/sdp. Usage: fake_rtsp_camera.py PORT SIZE
import socket, sys, threading
port, size = int(sys.argv[1]), int(sys.argv[2])
line = b"<html><body>Internal error\r\n\x1b[31mforged line</body></html>\n"
chunk = (line * (65536 // len(line) + 1))[:65536]
def serve(c):
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                d = c.recv(4096)
                if not d: return
                buf += d
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode(errors="replace").split("\r\n")
            method = lines[0].split()[0]
            cseq = next((l.split(":",1)[1].strip() for l in lines if l.lower().startswith("cseq:")), "0")
            if method == "OPTIONS":
                c.sendall(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: OPTIONS, DESCRIBE\r\n\r\n".encode())
            else:
                c.sendall(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Type: application/sdp\r\nContent-Length: {size}\r\n\r\n".encode())
                left = size
                while left > 0:
                    n = min(left, len(chunk)); c.sendall(chunk[:n]); left -= n
                c.recv(1024)
                return
    except OSError:
        return
    finally:
        c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(64)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
