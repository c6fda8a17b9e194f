// `npm start`: read the configuration, start kvql, stop cleanly on SIGINT/SIGTERM.
import { ConfigError, loadConfig } from './config.js';
import { createLogger, type Logger } from './log.js';
import { startServer } from './server.js';

let log: Logger | undefined;

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      // Plain text, for the person starting it: there is no logger yet (LOG_LEVEL is part of
      // what was read), and the message names every wrong variable on its own line.
      console.error(`kvql: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  log = createLogger({ level: config.logLevel });
  const running = await startServer(config, log);
  log.info(`listening on ${running.url} (GraphiQL in a browser at the same address)`);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log!.info(`${signal}, shutting down`);
    await running.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  // kill -HUP: read KV_TOKENS_FILE again now (it is also watched); a bad file keeps the old tokens.
  process.on('SIGHUP', () => void running.reloadTokens('SIGHUP'));
}

main().catch((err: unknown) => {
  (log ?? createLogger()).fatal({ err }, `failed to start: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
