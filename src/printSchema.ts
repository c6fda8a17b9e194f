// `npm run schema`: prints the GraphQL schema; the package script writes it to schema.graphql.
import { printSchemaSDL } from './graphql/schema.js';

process.stdout.write(printSchemaSDL());
