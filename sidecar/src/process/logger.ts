/**
 * The sidecar's log: one line per event on stderr, in logfmt-like form that
 * both people and log shippers read:
 *
 *   2026-11-22T04:51:54.123Z WARN node=node1 component=pump msg="..." key=value
 */
import type { LogLevel } from './config.ts';

export type Fields = Record<string, unknown>;

export interface Logger {
  debug(component: string, message: string, fields?: Fields): void;
  info(component: string, message: string, fields?: Fields): void;
  warn(component: string, message: string, fields?: Fields): void;
  error(component: string, message: string, fields?: Fields): void;
  log(level: LogLevel, component: string, message: string, fields?: Fields): void;
}

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

function quote(value: unknown): string {
  const text = typeof value === 'string' ? value : value instanceof Error ? value.message : JSON.stringify(value);
  if (text === undefined) return 'undefined';
  return /^[A-Za-z0-9_.:/@+-]+$/.test(text) ? text : JSON.stringify(text);
}

export function createLogger(nodeId: string, level: LogLevel, write: (line: string) => void = (line) => process.stderr.write(line + '\n')): Logger {
  const threshold = ORDER[level];
  const log = (lvl: LogLevel, component: string, message: string, fields?: Fields) => {
    if (ORDER[lvl] < threshold) return;
    let line = `${new Date().toISOString()} ${lvl.toUpperCase().padEnd(5)} node=${quote(nodeId)} component=${quote(component)} msg=${JSON.stringify(message)}`;
    for (const [key, value] of Object.entries(fields ?? {})) {
      if (value !== undefined) line += ` ${key}=${quote(value)}`;
    }
    write(line);
  };
  return {
    log,
    debug: (c, m, f) => log('debug', c, m, f),
    info: (c, m, f) => log('info', c, m, f),
    warn: (c, m, f) => log('warn', c, m, f),
    error: (c, m, f) => log('error', c, m, f),
  };
}
