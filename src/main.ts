// `npm start`: read the configuration, start kvql, stop cleanly on SIGINT/SIGTERM.
import { ConfigError, loadConfig } from './config.js';
import { startServer } from './server.js';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`kvql: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
  const running = await startServer(config);
  console.log(`kvql: listening on ${running.url} (GraphiQL in a browser at the same address)`);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`kvql: ${signal}, shutting down`);
    await running.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
}

main().catch((err: unknown) => {
  console.error('kvql: failed to start:', err instanceof Error ? err.message : err);
  process.exit(1);
});
