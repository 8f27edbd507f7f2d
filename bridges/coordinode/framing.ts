/**
 * gRPC message bodies of CoordiNode's RaftService: the protobuf RaftPayload
 * (0x0a, varint length, msgpack bytes) or RaftEmpty (no bytes), optionally
 * compressed whole with zstd (level 3) by CoordiNode's newest, untagged code,
 * which keeps the gRPC compressed flag at 0. A zstd frame begins with the
 * magic bytes 28 b5 2f fd, which no plain RaftPayload begins with, so
 * inbound bodies are recognised either way; outbound framing follows the
 * peer's setting.
 */
import * as zlib from 'node:zlib';
import { CoordinodeDecodeError, decodeRaftEmpty, decodeRaftPayload, encodeRaftPayload } from './codec.ts';
import { ZSTD_UNAVAILABLE, zstdAvailable } from './options.ts';

const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

interface ZstdZlib {
  zstdCompressSync(data: Uint8Array, options?: { params?: Record<number, number> }): Buffer;
  zstdDecompressSync(data: Uint8Array, options?: { maxOutputLength?: number }): Buffer;
  constants: Record<string, number>;
}

export function isZstdFrame(body: Uint8Array): boolean {
  return body.length >= 4 && ZSTD_MAGIC.every((b, i) => body[i] === b);
}

function zstd(): ZstdZlib {
  if (!zstdAvailable()) throw new CoordinodeDecodeError(`the message is zstd-compressed, but ${ZSTD_UNAVAILABLE}`, 'frame');
  return zlib as unknown as ZstdZlib;
}

/** The body of a message: RaftPayload around `msgpack` (or RaftEmpty for null), zstd-compressed when asked. */
export function encodeBody(msgpack: Uint8Array | null, compress: boolean): Buffer {
  const plain = msgpack === null ? new Uint8Array(0) : encodeRaftPayload(msgpack);
  if (!compress) return Buffer.from(plain);
  const z = zstd();
  return z.zstdCompressSync(plain, { params: { [z.constants.ZSTD_c_compressionLevel as number]: 3 } });
}

function plainBody(body: Uint8Array, maxBytes: number): Uint8Array {
  if (!isZstdFrame(body)) return body;
  try {
    return zstd().zstdDecompressSync(body, { maxOutputLength: maxBytes });
  } catch (err) {
    if (err instanceof CoordinodeDecodeError) throw err;
    throw new CoordinodeDecodeError(`bad zstd frame: ${(err as Error).message}`, 'frame');
  }
}

/** The msgpack bytes inside a RaftPayload body (plain or zstd). */
export function decodePayloadBody(body: Uint8Array, maxBytes: number): Uint8Array {
  return decodeRaftPayload(plainBody(body, maxBytes));
}

/** Checks a RaftEmpty body (plain or zstd). */
export function decodeEmptyBody(body: Uint8Array, maxBytes: number): void {
  decodeRaftEmpty(plainBody(body, maxBytes));
}
