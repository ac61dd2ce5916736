"""Peak RSS of sfmc-proxy under unauthenticated SOAP uploads (issue: 300 uploads
of 1 MiB took the process from 9 MB to 463 MB). Usage: python3 unauth_memory.py BINARY"""
import os, socket, subprocess, sys, tempfile, time, threading

binary = sys.argv[1]
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
cfg.write(f"""[server]
listen = "127.0.0.1:{port}"
inbound_keys = ["inbound-key-0123456789"]
[tenants.acme]
auth_url = "https://mc0123456789012345678901234567.auth.marketingcloudapis.com/"
client_id = "id"
client_secret = "secret"
""")
cfg.close()
proc = subprocess.Popen([binary, "--config", cfg.name], stderr=subprocess.DEVNULL)
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", port)).close(); break
    except OSError:
        time.sleep(0.05)

def rss():
    with open(f"/proc/{proc.pid}/status") as f:
        fields = dict(l.split(":", 1) for l in f)
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024

print("idle RSS MiB (now, peak):", rss())
N, SIZE = 300, 1024 * 1024
head = (f"POST /Service.asmx HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/xml\r\n"
        f"Content-Length: {SIZE}\r\n\r\n").encode()
body = b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><!--' + b"x" * (SIZE - 70)
socks, answers = [], []
def upload():
    c = socket.create_connection(("127.0.0.1", port))
    c.settimeout(30)
    socks.append(c)
    try:
        c.sendall(head)
        sent = 0
        while sent < len(body):
            sent += c.send(body[sent:sent + 65536])
    except OSError:
        pass
    try:
        answers.append(c.recv(64).split(b"\r\n")[0])
    except OSError as e:
        answers.append(str(e).encode())
threads = [threading.Thread(target=upload) for _ in range(N)]
for t in threads: t.start()
for t in threads: t.join()
print(f"after {N} unauthenticated 1 MiB SOAP uploads, RSS MiB (now, peak):", rss())
print("answers:", {a: answers.count(a) for a in set(answers)})
proc.terminate(); proc.wait()
os.unlink(cfg.name)
