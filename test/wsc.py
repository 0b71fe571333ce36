# wsc.py: a minimal Candy client over RFC 6455 for negative tests.
#   http HOST PORT                        print the HTTP status line
#   replay HOST PORT PW IP                send one AUTH on two connections
#   spoof HOST PORT PW MYIP SRCIP DSTIP   authenticate as MYIP, then send
#       UDP to DSTIP port 9998 from MYIP and port 9999 from SRCIP
#   race HOST PORT PW CIDR                two hosts ask for the same address
#       at once (EXPTTUN, no AUTH yet); prints both granted cidrs
#   slow HOST PORT PW IP SECS             authenticate as IP, then never read:
#       a ping every 2 s, until the server closes or SECS pass; prints
#       "closed after N s" or "open"
#   ipip HOST PORT PW MYIP SRCIP DSTIP    authenticate as MYIP, then send
#       IP-in-IP to DSTIP: inner UDP port 9998 from MYIP, 9999 from SRCIP
#   server PORT PW GRANTS ROUTES MODE     a hostile server, one connection
#       at a time: grants the cidrs of GRANTS (comma-separated) to the
#       connections in turn (the last one repeats; "-": closes instead),
#       pushes ROUTES (dst/prefix>next,...; "-" none) to the first client
#       that authenticates, then MODE: serve (reads, pings every 10 s),
#       noread (never reads again, pings every 2 s), close:TEXT (a close
#       frame with TEXT instead of the grant), drop:SECS (serve, close
#       after SECS).  Prints "conn N" and "auth IP" as they happen.
#   flood HOST PORT N SECS SRC[,SRC...]  keep N connections open from the
#       source addresses in turn, each upgraded and pinged every second but
#       never authenticated, reopening those the server closes, for SECS;
#       then wait up to 30 s for the server to close the rest.  Prints what
#       happened ("opened N refused N ... left 0")
#   bigping HOST PORT PW IP              a 2000-byte ping before AUTH (the
#       server closes the connection) and after it (answered); prints
#       "stranger: closed|open" and "client: pong|closed"
#   many HOST PORT PW N CIDR16 [HOLD]     authenticate N connections as
#       N addresses of CIDR16 (a /16), one after the other; print
#       "accepted N" for those still open 3 s after the last, then keep
#       them HOLD more seconds
import base64, hashlib, os, resource, select, socket, struct, sys, time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def h(*parts):
    return hashlib.sha256(b"".join(parts)).digest()


def ip4(s):
    return socket.inet_aton(s)


class Conn:
    def __init__(self, host, port, rcvbuf=0, src=None):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if src:
            self.s.bind((src, 0))
        self.s.settimeout(5)
        self.s.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16))
        self.s.sendall(b"GET / HTTP/1.1\r\nHost: " + host.encode() +
                       b"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                       b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
                       key + b"\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = self.s.recv(4096)
            if not d:
                raise EOFError("closed during the upgrade")
            buf += d
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise EOFError("no 101: %r" % head[:80])
        want = base64.b64encode(hashlib.sha1(key + GUID).digest())
        if want not in head:
            raise EOFError("bad Sec-WebSocket-Accept")

    def send(self, payload, opcode=2):
        mask = os.urandom(4)
        n = len(payload)
        hdr = bytes([0x80 | opcode])
        if n < 126:
            hdr += bytes([0x80 | n])
        elif n < 65536:
            hdr += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            hdr += bytes([0x80 | 127]) + struct.pack(">Q", n)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.s.sendall(hdr + mask + body)

    def need(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.time()
            if left <= 0:
                raise socket.timeout()
            self.s.settimeout(left)
            d = self.s.recv(65536)
            if not d:
                raise EOFError("closed")
            self.buf += d

    def frame(self, deadline):
        self.need(2, deadline)
        op, n = self.buf[0] & 15, self.buf[1] & 127
        off = 2
        if n == 126:
            self.need(4, deadline)
            n, off = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            self.need(10, deadline)
            n, off = struct.unpack(">Q", self.buf[2:10])[0], 10
        self.need(off + n, deadline)
        p, self.buf = self.buf[off:off + n], self.buf[off + n:]
        return op, p

    def closed_within(self, secs):
        """True when the server closes within secs (EOF or close frame)."""
        deadline = time.time() + secs
        try:
            while True:
                op, _ = self.frame(deadline)
                if op == 8:
                    return True
        except socket.timeout:
            return False
        except (EOFError, OSError):
            return True


def vmac_msg(pw, vmac, ts):
    t = struct.pack(">q", ts)
    return b"\x04" + vmac + t + h(pw, vmac, t)


def auth_msg(pw, ip, ts):
    t = struct.pack(">q", ts)
    return b"\x00" + ip4(ip) + t + h(pw, ip4(ip), t)


def expttun_msg(pw, cidr, ts):
    t = struct.pack(">q", ts)
    return b"\x02" + t + cidr.encode().ljust(32, b"\0") + h(pw, t)


def csum(b):
    s = sum(struct.unpack(">%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff


def udp_packet(src, dst, dport, data):
    udp = struct.pack(">HHHH", 40000, dport, 8 + len(data), 0) + data
    hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64,
                      17, 0, ip4(src), ip4(dst))
    hdr = hdr[:10] + struct.pack(">H", csum(hdr)) + hdr[12:]
    return hdr + udp


def login(host, port, pw, ip, rcvbuf=0):
    c = Conn(host, port, rcvbuf)
    ts = int(time.time())
    c.send(vmac_msg(pw, os.urandom(8).hex().encode(), ts))
    a = auth_msg(pw, ip, ts)
    c.send(a)
    return c, a


def cmd_http(host, port):
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
    buf = b""
    try:
        while b"\r\n" not in buf:
            d = s.recv(4096)
            if not d:
                break
            buf += d
    except socket.timeout:
        pass
    print(buf.split(b"\r\n")[0].decode("latin-1"))


def cmd_replay(host, port, pw, ip):
    c1, a = login(host, port, pw, ip)
    if c1.closed_within(1.5):
        print("first: closed")
        return 2
    print("first: accepted")
    c2 = Conn(host, port)
    c2.send(vmac_msg(pw, os.urandom(8).hex().encode(), int(time.time())))
    c2.send(a)
    second = c2.closed_within(3)
    print("second: " + ("closed" if second else "open"))
    first = c1.closed_within(0.5)
    print("first after: " + ("closed" if first else "open"))
    return 0 if second and not first else 1


def cmd_spoof(host, port, pw, me, src, dst):
    c, _ = login(host, port, pw, me)
    if c.closed_within(1.5):
        print("login: closed")
        return 2
    print("login: accepted")
    for _ in range(3):
        c.send(b"\x01" + udp_packet(me, dst, 9998, b"legit"))
        c.send(b"\x01" + udp_packet(src, dst, 9999, b"spoofed"))
    closed = c.closed_within(1)
    print("after: " + ("closed" if closed else "open"))
    return 0


def cmd_race(host, port, pw, cidr):
    conns = [Conn(host, port) for _ in range(2)]
    ts = int(time.time())
    for c in conns:
        c.send(vmac_msg(pw, os.urandom(8).hex().encode(), ts))
        c.send(expttun_msg(pw, cidr, ts))
    for c in conns:
        deadline = time.time() + 5
        while True:
            op, p = c.frame(deadline)
            if op == 2 and p[:1] == b"\x02" and len(p) >= 73:
                print(p[9:41].split(b"\0")[0].decode())
                break
    return 0


def cmd_slow(host, port, pw, ip, secs):
    c, _ = login(host, port, pw, ip, rcvbuf=4096)
    print("login: sent", flush=True)
    start = time.time()
    while time.time() - start < float(secs):
        try:
            c.send(b"slow", opcode=9)
        except OSError:
            print("closed after %d s" % (time.time() - start))
            return 0
        time.sleep(2)
    print("open")
    return 0


def cmd_bigping(host, port, pw, ip):
    big = os.urandom(2000)
    c = Conn(host, port)
    c.send(big, opcode=9)
    stranger = c.closed_within(3)
    print("stranger: " + ("closed" if stranger else "open"))
    c, _ = login(host, port, pw, ip)
    c.send(big, opcode=9)
    deadline = time.time() + 5
    pong = False
    try:
        while not pong:
            op, p = c.frame(deadline)
            pong = op == 10 and p == big
    except (socket.timeout, EOFError, OSError):
        pass
    print("client: " + ("pong" if pong else "closed"))
    return 0 if stranger and pong else 1


def cmd_ipip(host, port, pw, me, src, dst):
    c, _ = login(host, port, pw, me)
    if c.closed_within(1.5):
        print("login: closed")
        return 2
    print("login: accepted")
    for _ in range(3):
        for sport, inner_src in ((9998, me), (9999, src)):
            inner = udp_packet(inner_src, dst, sport, b"ipip")
            outer = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(inner),
                                1, 0, 64, 4, 0, ip4(me), ip4(dst))
            outer = outer[:10] + struct.pack(">H", csum(outer)) + outer[12:]
            c.send(b"\x01" + outer + inner)
    closed = c.closed_within(1)
    print("after: " + ("closed" if closed else "open"))
    return 0


class Served:
    """The server side of one WebSocket connection (frames from a client
    are masked)."""

    def __init__(self, s):
        self.s = s
        self.buf = b""
        deadline = time.time() + 5
        while b"\r\n\r\n" not in self.buf:
            self.more(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        key = b""
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"sec-websocket-key:"):
                key = line.split(b":", 1)[1].strip()
        acc = base64.b64encode(hashlib.sha1(key + GUID).digest())
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket"
                  b"\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
                  acc + b"\r\n\r\n")

    def more(self, deadline):
        left = deadline - time.time()
        if left <= 0:
            raise socket.timeout()
        self.s.settimeout(left)
        d = self.s.recv(65536)
        if not d:
            raise EOFError("closed")
        self.buf += d

    def frame(self, deadline):
        while True:
            if len(self.buf) >= 2:
                n, off = self.buf[1] & 127, 2
                if n == 126 and len(self.buf) >= 4:
                    n, off = struct.unpack(">H", self.buf[2:4])[0], 4
                elif n == 127 and len(self.buf) >= 10:
                    n, off = struct.unpack(">Q", self.buf[2:10])[0], 10
                if n < 126 or off > 2:
                    if len(self.buf) >= off + 4 + n:
                        op = self.buf[0] & 15
                        m = self.buf[off:off + 4]
                        p = bytes(b ^ m[i % 4] for i, b in
                                  enumerate(self.buf[off + 4:off + 4 + n]))
                        self.buf = self.buf[off + 4 + n:]
                        return op, p
            self.more(deadline)

    def send(self, payload, opcode=2):
        n = len(payload)
        if n < 126:
            hdr = bytes([0x80 | opcode, n])
        else:
            hdr = bytes([0x80 | opcode, 126]) + struct.pack(">H", n)
        self.s.sendall(hdr + payload)


def route_msgs(routes):
    ents = []
    for r in routes.split(","):
        net, nxt = r.split(">")
        dst, pfx = net.split("/")
        mask = (0xffffffff << (32 - int(pfx))) & 0xffffffff if int(pfx) else 0
        ents.append(ip4(dst) + struct.pack(">I", mask) + ip4(nxt))
    out = []
    for i in range(0, len(ents), 100):
        part = ents[i:i + 100]
        out.append(bytes([6, len(part), 0, 0]) + b"".join(part))
    return out


def serve_one(c, pw, grant, routes, mode):
    """One connection; returns True when a client authenticated."""
    deadline = time.time() + 10
    authed = False
    while not authed:
        op, p = c.frame(deadline)
        if op != 2 or not p:
            continue
        if p[0] == 2:
            if mode.startswith("close:"):
                c.send(struct.pack(">H", 1008) + mode[6:].encode(), 8)
                return False
            if grant == "-":
                return False
            ts = struct.pack(">q", int(time.time()))
            c.send(b"\x02" + ts + grant.encode().ljust(32, b"\0") +
                   h(pw, ts))
        elif p[0] == 0:
            authed = True
            print("auth " + socket.inet_ntoa(p[1:5]), flush=True)
    if routes:
        for m in route_msgs(routes):
            c.send(m)
    start = time.time()
    ping = 0
    every = 2 if mode == "noread" else 10
    while True:
        now = time.time()
        if mode.startswith("drop:") and now - start > float(mode[5:]):
            return True
        if now - ping >= every:
            c.send(b"hostile", 9)
            ping = now
        if mode == "noread":
            time.sleep(0.5)
            continue
        try:
            c.frame(now + 0.5)
        except socket.timeout:
            pass


def cmd_server(port, pw, grants, routes, mode):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if mode == "noread":
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ls.bind(("0.0.0.0", int(port)))
    ls.listen(4)
    print("listening", flush=True)
    grants = grants.split(",")
    routes = None if routes == "-" else routes
    n = 0
    while True:
        s, _ = ls.accept()
        n += 1
        print("conn %d" % n, flush=True)
        grant = grants[min(n, len(grants)) - 1]
        try:
            c = Served(s)
            if serve_one(c, pw, grant, routes, mode):
                routes = None
        except (OSError, EOFError, socket.timeout):
            pass
        s.close()


def fd_limit_raise():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def try_conn(host, port, src=None):
    try:
        c = Conn(host, port, src=src)
        c.born = time.time()
        return c
    except (OSError, EOFError):
        return None


def alive(conns):
    """Drop (and return the ages of) the connections the server closed."""
    p = select.poll()
    for c in conns:
        p.register(c.s, select.POLLIN)
    ready = {fd for fd, _ in p.poll(0)}
    ages = []
    for c in list(conns):
        if c.s.fileno() not in ready:
            continue
        try:
            d = c.s.recv(65536)
        except OSError:
            d = b""
        if not d or d[:1] == b"\x88":
            ages.append(time.time() - c.born)
            c.s.close()
            conns.remove(c)
    return ages


def cmd_flood(host, port, n, secs, srcs):
    fd_limit_raise()
    srcs = srcs.split(",")
    conns, opened, refused, closed, oldest = [], 0, 0, 0, 0.0
    end, k, ping = time.time() + float(secs), 0, 0
    while time.time() < end:
        if len(conns) < int(n):
            c = try_conn(host, port, srcs[k % len(srcs)])
            k += 1
            if c is None:
                refused += 1
                time.sleep(0.01)
            else:
                opened += 1
                conns.append(c)
        else:
            time.sleep(0.05)
        if time.time() > ping:
            ping = time.time() + 1
            for c in conns:
                try:
                    c.send(b"hi", opcode=9)
                except OSError:
                    pass
        ages = alive(conns)
        closed += len(ages)
        oldest = max([oldest] + ages)
    print("flooded: opened %d refused %d closed %d open %d" %
          (opened, refused, closed, len(conns)), flush=True)
    end = time.time() + 30
    while conns and time.time() < end:
        for c in conns:
            try:
                c.send(b"hi", opcode=9)
            except OSError:
                pass
        time.sleep(0.5)
        ages = alive(conns)
        oldest = max([oldest] + ages)
    print("oldest lived %.0f s, left %d" % (oldest, len(conns)))
    return 0


def cmd_many(host, port, pw, n, cidr, hold=0):
    fd_limit_raise()
    net = struct.unpack(">I", ip4(cidr.split("/")[0]))[0]
    conns, failed, pinged = [], 0, time.time()

    def keepalive(now):
        # The server closes a connection silent for 60 s.
        for c in conns:
            try:
                c.send(b"", opcode=9)
            except OSError:
                pass
        return now

    for i in range(int(n)):
        ip = socket.inet_ntoa(struct.pack(">I", net + 256 + i))
        c = try_conn(host, port)
        if c is None:
            failed += 1
            continue
        c.send(auth_msg(pw, ip, int(time.time())))
        conns.append(c)
        if i % 256 == 255:
            alive(conns)
            if time.time() - pinged > 20:
                pinged = keepalive(time.time())
    time.sleep(3)
    alive(conns)
    print("accepted %d failed %d" % (len(conns), failed), flush=True)
    end = time.time() + float(hold)
    while time.time() < end:
        time.sleep(min(20, max(0, end - time.time())))
        keepalive(0)
    return 0


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "http":
        cmd_http(*args)
        return 0
    if cmd == "flood":
        return cmd_flood(*args)
    pw = args[2].encode() if len(args) > 2 else b""
    if cmd == "replay":
        return cmd_replay(args[0], args[1], pw, args[3])
    if cmd == "spoof":
        return cmd_spoof(args[0], args[1], pw, *args[3:6])
    if cmd == "race":
        return cmd_race(args[0], args[1], pw, args[3])
    if cmd == "server":
        return cmd_server(args[0], args[1].encode(), args[2], args[3],
                          args[4])
    if cmd == "ipip":
        return cmd_ipip(args[0], args[1], pw, *args[3:6])
    if cmd == "many":
        return cmd_many(args[0], args[1], pw, *args[3:6])
    if cmd == "bigping":
        return cmd_bigping(args[0], args[1], pw, args[3])
    if cmd == "slow":
        return cmd_slow(args[0], args[1], pw, args[3], args[4])
    return 64


sys.exit(main(sys.argv))
