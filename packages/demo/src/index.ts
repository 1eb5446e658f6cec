export { demoCommand } from './command.js';
export {
  DEMO_TARGET_SUCCESS_RATE,
  type DemoEndpointResult,
  type DemoHopResult,
  type DemoOptions,
  type DemoResult,
  runDemo,
} from './run.js';
