#!/usr/bin/env python3
"""A loopback TCP proxy for running a WebSocket conformance client against sockloop's ws
mode: it forwards both directions byte for byte, except that it drops the first frame the
server sends after its 101 response (sockloop's "hello, I am a server" greeting), which a
conformance client would take for an unexpected message.

    python3 greeting_skip_proxy.py LISTEN_PORT UPSTREAM_PORT

Loopback only; stops on SIGTERM/SIGINT.
"""
import asyncio, sys

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass

async def server_to_client(reader, writer):
    """Pass the HTTP response through; if it was a 101, drop the first frame after it."""
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            data = await reader.read(65536)
            if not data:
                writer.write(buf)
                await writer.drain()
                writer.close()
                return
            buf += data
        head, rest = buf.split(b"\r\n\r\n", 1)
        writer.write(head + b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 101"):
            # One unmasked server frame: 2 header bytes, then the payload (< 126 bytes).
            while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F):
                data = await reader.read(65536)
                if not data:
                    break
                rest += data
            if len(rest) >= 2 and rest[1] & 0x7F < 126:
                rest = rest[2 + (rest[1] & 0x7F):]
        writer.write(rest)
        await writer.drain()
    except ConnectionError:
        return
    await pipe(reader, writer)

async def handle(client_reader, client_writer, upstream_port):
    try:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, up_writer), server_to_client(up_reader, client_writer))
    for w in (client_writer, up_writer):
        w.close()

async def main(listen_port, upstream_port):
    server = await asyncio.start_server(lambda r, w: handle(r, w, upstream_port), "127.0.0.1", listen_port)
    # LISTEN_PORT 0 lets the kernel pick; the port is printed for the caller.
    print(f"proxy listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()

if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
