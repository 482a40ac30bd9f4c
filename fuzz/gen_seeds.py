#!/usr/bin/env python3
"""Writes the hand-written seed inputs (fuzz/seeds/<target>/) and the dictionaries
(fuzz/dict/<target>.dict) of the fuzz targets. Rerun after changing an input layout:
    python3 fuzz/gen_seeds.py
"""
import os, struct, base64

root = os.path.dirname(os.path.abspath(__file__))
def seed(target, name, data):
    d = os.path.join(root, 'seeds', target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str): data = data.encode()
    open(os.path.join(d, name), 'wb').write(data)

# ---- ws_decoder: [max_lo, max_hi, n, lens..., stream]
MASK = bytes([0x12, 0x34, 0x56, 0x78])
def frame(fin, op, payload, mask=MASK, masked=True):
    out = bytearray([(0x80 if fin else 0) | op])
    m = 0x80 if masked else 0
    n = len(payload)
    if n < 126: out.append(m | n)
    elif n <= 0xFFFF: out.append(m | 126); out += struct.pack('>H', n)
    else: out.append(m | 127); out += struct.pack('>Q', n)
    if masked:
        out += mask
        out += bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    else:
        out += payload
    return bytes(out)
def ws(maxlen, lens, stream):
    return struct.pack('<H', maxlen) + bytes([len(lens)]) + bytes(lens) + stream
mouse = b'{"type":"mouse","eventType":"mousePressed","x":10.5,"y":20,"button":"left","clickCount":1,"modifiers":8}'
seed('ws_decoder', 'text-mouse', ws(65535, [], frame(True, 1, mouse)))
seed('ws_decoder', 'text-split-reads', ws(1024, [1, 3, 5, 2], frame(True, 1, b'{"type":"relaunch"}')))
seed('ws_decoder', 'fragments-with-ping', ws(1024, [4, 9],
     frame(False, 1, b'hel') + frame(True, 9, b'p') + frame(True, 0, b'lo') + frame(True, 10, b'')))
seed('ws_decoder', 'close-1000-bye', ws(1024, [], frame(True, 8, struct.pack('>H', 1000) + b'bye')))
seed('ws_decoder', 'binary-200', ws(4096, [7], frame(True, 2, bytes(range(200)))))
seed('ws_decoder', 'len126-text', ws(1024, [2, 2], frame(True, 1, b'a' * 300)))
seed('ws_decoder', 'too-big-announced', ws(1000, [], frame(True, 1, b'a' * 10000)[:8]))
seed('ws_decoder', 'len127-header', ws(65535, [], bytes([0x82, 0xFF]) + struct.pack('>Q', 70000) + MASK))
seed('ws_decoder', 'unmasked', ws(1024, [], frame(True, 1, b'x', masked=False)))
seed('ws_decoder', 'invalid-utf8', ws(1024, [], frame(True, 1, b'\xff\xfe')))
seed('ws_decoder', 'fragmented-too-big', ws(1000, [], frame(False, 1, b'a' * 600) + frame(True, 0, b'a' * 600)))

# ---- client_message: text of client messages (docs/PROTOCOL.md)
msgs = {
 'mouse-pressed': mouse.decode(),
 'mouse-wheel': '{"type":"mouse","eventType":"mouseWheel","x":0,"y":0,"deltaX":-3.5,"deltaY":120,"modifiers":null}',
 'mouse-moved': '{"type":"mouse","eventType":"mouseMoved","x":1e3,"y":2,"button":"none"}',
 'keyboard-char': '{"type":"keyboard","eventType":"char","text":"a","key":"a","code":"KeyA","modifiers":null}',
 'keyboard-enter': '{"type":"keyboard","eventType":"keyDown","key":"Enter","code":"Enter"}',
 'keyboard-digit': '{"type":"keyboard","eventType":"keyUp","key":"1","code":"Digit1","modifiers":2}',
 'relaunch': '{"type":"relaunch"}',
 'resume': '{"type":"resume","lastSeq":42}',
 'resume-null': '{"type":"resume","lastSeq":null}',
 'snapshot': '{"type":"snapshot-request"}',
 'config': '{"type":"config","maxFps":30,"ack":true}',
 'config-null': '{"type":"config","maxFps":null,"ack":false}',
 'ack': '{"type":"ack","seq":1700000000123456}',
 'control-request': '{"type":"control-request"}',
 'control-release': '{"type":"control-release"}',
 'input-mouse': '{"type":"input","kind":"mouse","eventType":"mousePressed","x":3,"y":4,"button":"left","clickCount":2,"frameSeq":9}',
 'input-key': '{"type":"input","kind":"key","eventType":"keyDown","key":"Backspace","code":"Backspace","modifiers":15}',
 'input-text': '{"type":"input","kind":"text","text":"h\\u00e9llo \\ud83d\\ude00"}',
 'bad-x': '{"type":"mouse","eventType":"mouseMoved","x":-1,"y":0}',
 'bad-type': '{"type":"teleport"}',
}
for k, v in msgs.items(): seed('client_message', k, v)

# ---- handshake: key \n agent \n thread
seed('handshake', 'key-agent-thread', 'dGhlIHNhbXBsZSBub25jZQ==\nagent-1\nthread-9')
seed('handshake', 'key-agent', 'dGhlIHNhbXBsZSBub25jZQ==\nmy-agent')
seed('handshake', 'key-unicode-agent', 'x3JJHMbDL1EzLkh9GBhXDw==\nagént 🤖\nthread:with:colons')
seed('handshake', 'bad-key-agent-colon', 'dGhlIHNhbXBsZSBub25jZQ=x\nagent:1\n')
seed('handshake', 'long-agent', 'AAAAAAAAAAAAAAAAAAAAAA==\n' + 'a' * 256 + '\n' + 'b' * 257)

# ---- frame_header: text [\0 params]
jpeg = open(os.path.join(root, '..', '__test__', 'fixtures', 'frame-320x240.jpg'), 'rb').read()
def params(seq=7, index=1, meta=(1280.0, 960.0, 1.0, 0.0, 0.0, 120.0, 1700000000123.5), point=(160.0, 120.0)):
    return struct.pack('<QQ', seq, index) + struct.pack('<7d', *meta) + struct.pack('<2d', *point)
seed('frame_header', 'jpeg-base64-full', base64.b64encode(jpeg) + b'\0' + params())
seed('frame_header', 'jpeg-base64-head', base64.b64encode(jpeg[:600]) + b'\0' + params(seq=0x0102030405060708))
seed('frame_header', 'jpeg-raw-head', jpeg[:700])
mini = bytes([0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x4A, 0x46, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0x00, 0xF0, 0x01, 0x40, 0x03]) + bytes(16)
seed('frame_header', 'jpeg-minimal-base64', base64.b64encode(mini).rstrip(b'=') + b'\0' + params(meta=(412.5, 915.0, 2.0, 56.0, 0.0, 3000.0, 0.0)))
png = b'\x89PNG\r\n\x1a\n\0\0\0\rIHDR' + struct.pack('>II', 800, 600) + b'\x08\x02\0\0\0'
seed('frame_header', 'png-raw', png)
seed('frame_header', 'png-base64', base64.b64encode(png) + b'\0' + params(seq=1 << 60))
webpx = b'RIFF\0\0\0\0WEBPVP8X' + bytes(8) + bytes([0x1F, 0x03, 0x00, 0xDF, 0x01, 0x00])
seed('frame_header', 'webp-vp8x-raw', webpx)
seed('frame_header', 'webp-vp8x-base64', base64.b64encode(webpx) + b'\0' + params())
webpl = b'RIFF\0\0\0\0WEBPVP8L' + bytes(4) + bytes([0x2F]) + struct.pack('<I', (799) | (599 << 14))
seed('frame_header', 'webp-vp8l-base64', base64.b64encode(webpl))
webp8 = b'RIFF\0\0\0\0WEBPVP8 ' + bytes(10) + struct.pack('<HH', 640, 480)
seed('frame_header', 'webp-vp8-raw', webp8)

# ---- events: textual ops
seed('events', 'deltas-merge-then-flush', '\n'.join([
 '1000 4194304 60000 1 262144 100',
 'p 0 0 {"type":"text_delta","text":"Hel"}',
 'p 0 5 {"type":"text_delta","text":"lo"}',
 'p 3 1 {"type":"tool_start","name":"x"}',
 'p 0 0 {"type":"text_delta","delta":" world","messageId":"m1"}',
 'p 0 0 {"type":"text_delta","delta":"!","messageId":"m2"}',
 'f 1 0 50',
 'f 0 2 50',
 'a - 100 0',
 'a b3 10 0',
]))
seed('events', 'resume-stale', '\n'.join([
 '3 4194304 60000 0 262144 10',
 'p 0 0 {"type":"n","i":0}',
 'p 0 0 {"type":"n","i":1}',
 'p 0 0 {"type":"n","i":2}',
 'a 11 10 0',
 'p 0 0 {"type":"n","i":3}',
 'p 0 0 {"type":"n","i":4}',
 'a 11 10 0',
 'a 12 10 0',
 'a 5 10 0',
 'a a99 10 0',
 'a b1 1 0',
]))
seed('events', 'ring-bytes-and-age', '\n'.join([
 '1000 200 5000 1 262144 0',
 'p 0 0 {"type":"x","pad":"0123456789"}',
 'p 0 0 {"type":"x","pad":"0123456789"}',
 'p 0 0 {"type":"x","pad":"0123456789"}',
 'e 1000',
 'p 0 0 {"type":"x","pad":"0123456789"}',
 'w 6000',
 'a - 100 0',
 'a b1005 100 0',
]))
seed('events', 'delta-size-limit', '\n'.join([
 '1000 4194304 60000 1 64 0',
 'p 0 0 {"type":"text_delta","text":"0123456789012345678901234567890"}',
 'p 0 0 {"type":"text_delta","text":"0123456789012345678901234567890"}',
 'p 0 0 {"type":"text_delta","text":"0123456789"}',
 'p 0 0 {"type":"text_delta","text":"0123456789012345678901234567890123456789012345678901234567890123"}',
 'p 0 0 [1]',
 'p 0 0 {"x":1}',
 'p 0 0 {"type":"text_delta","text":5}',
 'f 0 0 50',
 'a - 10 0',
]))

# ---- dictionaries
def dict_file(target, tokens):
    os.makedirs(os.path.join(root, 'dict'), exist_ok=True)
    with open(os.path.join(root, 'dict', target + '.dict'), 'w') as f:
        for t in tokens:
            b = t.encode() if isinstance(t, str) else t
            esc = ''.join(chr(c) if 32 <= c < 127 and chr(c) not in '"\\' else '\\x%02x' % c for c in b)
            f.write('"%s"\n' % esc)
json_tokens = ['{', '}', '[', ']', ':', ',', '"', 'null', 'true', 'false', '-1', '0', '1e308', '-0', '1.5', '\\u0000', '\\ud83d',
  '"type"', '"mouse"', '"keyboard"', '"relaunch"', '"input"', '"resume"', '"snapshot-request"', '"config"', '"ack"',
  '"control-request"', '"control-release"', '"kind"', '"key"', '"text"', '"eventType"', '"mousePressed"', '"mouseReleased"',
  '"mouseMoved"', '"mouseWheel"', '"keyDown"', '"keyUp"', '"char"', '"x"', '"y"', '"button"', '"left"', '"right"', '"middle"',
  '"back"', '"forward"', '"none"', '"clickCount"', '"deltaX"', '"deltaY"', '"modifiers"', '"code"', '"lastSeq"', '"seq"',
  '"maxFps"', '"frameSeq"', '"Enter"', '"KeyA"', '"Digit1"', '"Backspace"', '16', '17', '15', '240', '240.0000001', '18446744073709551615', '18446744073709551616']
dict_file('client_message', json_tokens)
dict_file('events', ['\n', 'p 0 0 ', 'f 0 0 0', 'a - 100 0', 'a b1 10 0', 'a a1 10 0', 'e 1000', 'w 60001', '"type"', '"text_delta"', '"text"', '"delta"',
  '"messageId"', '"tool_start"', '{', '}', '[', ']', ':', ',', 'null', '1e400', '"\\u0000"'])
dict_file('handshake', ['==', '\n', ':', '+', '/', 'dGhlIHNhbXBsZSBub25jZQ==', '\x7f', '\x00', '\t', '\u0085', '\u2028', '\ufeff'])
dict_file('frame_header', ['/9j/', 'iVBORw0KGgo', 'UklGR', '=', '==', b'\x00', b'\xff\xd8', b'\xff\xc0', b'\xff\xc4', b'\xff\xda', b'\xff\xd9', b'\xff\xff',
  b'\x89PNG', b'IHDR', b'RIFF', b'WEBP', b'VP8 ', b'VP8L', b'VP8X'])
dict_file('ws_decoder', [b'\x81\x80', b'\x82\xfe', b'\x82\xff', b'\x01\x80', b'\x80\x80', b'\x88\x82', b'\x89\x80', b'\x8a\x80',
  b'\x00\x00\x00\x00\x00\x01\x11\x70', b'\x7f\xff\xff\xff\xff\xff\xff\xff', b'\x03\xe8', b'\xff\xfe', b'\xc3\x28'])
