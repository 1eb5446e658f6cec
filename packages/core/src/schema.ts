import { parseDuration } from './duration.js';
import type { ConfigIssue } from './errors.js';
import { checkKeys, checkNumber, describe, isPlainObject, join, type NumberRule } from './validate.js';

/**
 * meshlet's config schema: one declaration per option from which come the runtime validation (with
 * the field-path messages of `validate.ts`), the JSON Schema published for editors, and the
 * TypeScript input types (`scripts/gen-config.ts` writes them, with each option's doc and default as
 * JSDoc). See docs/architecture.md, "How to add a config key".
 */

/** A JSON Schema (draft-07) fragment. */
export type JsonSchema = { [key: string]: unknown };

/** What every option says about itself. */
export interface Doc {
  /** What the option does: the JSDoc of the generated type and the JSON Schema `description`. */
  readonly doc?: string | undefined;
  /**
   * The default as written in a config file (`'15s'`, `2`, `true`): documented, given as JSON
   * Schema `default`, and used by an object for an absent field.
   */
  readonly default?: unknown;
  /**
   * A default that depends on something else (`$MESHLET_ZONE`, the service's `defaults`, "none"):
   * documented only; an absent field stays undefined and the parser decides.
   */
  readonly defaultText?: string | undefined;
  /** The field must be given: `true` (`is required`) or the message after the path. */
  readonly required?: boolean | string | undefined;
}

/** `12`, `'250ms'`, `'2s'`, `'1.5m'`, `'1h'`: milliseconds or a number with a unit. */
export type Duration = number | `${number}${'ms' | 's' | 'm' | 'h'}`;

type AnySchema = Schema<unknown, unknown, boolean>;
/** The config input type a schema accepts. */
export type InputOf<S> = S extends Schema<infer I, unknown, boolean> ? I : never;
/** What a schema's `parse` returns. */
export type OutputOf<S> = S extends Schema<unknown, infer O, boolean> ? O : never;

/**
 * One option's type. `In` is what a config may contain, `Out` what `parse` returns; `Filled` says
 * that an object fills the field with its default when it is absent.
 */
export abstract class Schema<In, Out, Filled extends boolean = false> {
  declare readonly __input: In;
  declare readonly __filled: Filled;
  readonly meta: Doc;
  #default: { value: Out | undefined } | undefined;

  constructor(meta: Doc = {}) {
    this.meta = meta;
  }

  /** True when `raw` has a JS type this schema reads (a union picks the first option that does). */
  abstract accepts(raw: unknown): boolean;
  /**
   * Validates `raw` (never undefined: absent fields are their object's business). Every problem is
   * pushed onto `issues` by its path; returns undefined when the value is unusable.
   */
  abstract parse(raw: unknown, path: string, issues: ConfigIssue[], baseDir?: string): Out | undefined;
  abstract json(e: JsonEmitter): JsonSchema;
  abstract ts(e: TsEmitter): string;

  /** The parsed `default` (undefined when there is none). */
  defaultValue(): Out | undefined {
    if (!this.#default) {
      const issues: ConfigIssue[] = [];
      const value = this.meta.default === undefined ? undefined : this.parse(this.meta.default, '', issues);
      if (issues.length > 0)
        throw new Error(`meshlet: a schema default does not validate: ${JSON.stringify(issues)}`);
      this.#default = { value };
    }
    return this.#default.value;
  }

  /**
   * Maps the validated value (normalizes it, or checks across fields and pushes more issues).
   * Types, docs and the JSON Schema stay this schema's.
   */
  to<R>(
    fn: (value: Out, path: string, issues: ConfigIssue[], baseDir: string) => R | undefined,
  ): Schema<In, R, Filled> {
    return new MappedSchema(this, fn);
  }

  /** The same schema with its doc and default changed (a shared type used as a particular field). */
  with<const O extends Doc>(
    meta: O,
  ): Schema<In, Out, O extends { readonly default: unknown } ? true : false> {
    return new MappedSchema(this, (v) => v, { ...this.meta, ...meta }) as unknown as Schema<
      In,
      Out,
      O extends { readonly default: unknown } ? true : false
    >;
  }
}

class MappedSchema<In, Mid, Out, F extends boolean> extends Schema<In, Out, F> {
  readonly inner: Schema<In, Mid, F>;
  readonly #fn: (value: Mid, path: string, issues: ConfigIssue[], baseDir: string) => Out | undefined;
  constructor(
    inner: Schema<In, Mid, F>,
    fn: (value: Mid, path: string, issues: ConfigIssue[], baseDir: string) => Out | undefined,
    meta: Doc = inner.meta,
  ) {
    super(meta);
    this.inner = inner;
    this.#fn = fn;
  }
  accepts(raw: unknown): boolean {
    return this.inner.accepts(raw);
  }
  parse(raw: unknown, path: string, issues: ConfigIssue[], baseDir = ''): Out | undefined {
    const v = this.inner.parse(raw, path, issues, baseDir);
    return v === undefined ? undefined : this.#fn(v, path, issues, baseDir);
  }
  json(e: JsonEmitter): JsonSchema {
    return this.inner.json(e);
  }
  ts(e: TsEmitter): string {
    return this.inner.ts(e);
  }
}

// ---------------------------------------------------------------------------------------------
// Leaves

class BooleanSchema<F extends boolean> extends Schema<boolean, boolean, F> {
  accepts(raw: unknown): boolean {
    return typeof raw === 'boolean';
  }
  parse(raw: unknown, path: string, issues: ConfigIssue[]): boolean | undefined {
    if (typeof raw === 'boolean') return raw;
    issues.push({ path, message: `must be true or false, got ${describe(raw)}` });
    return undefined;
  }
  json(): JsonSchema {
    return { type: 'boolean' };
  }
  ts(): string {
    return 'boolean';
  }
}

export interface NumberDoc extends Doc, NumberRule {}

class NumberSchema<F extends boolean> extends Schema<number, number, F> {
  readonly rule: NumberRule;
  constructor(meta: NumberDoc) {
    super(meta);
    this.rule = { min: meta.min, max: meta.max, integer: meta.integer };
  }
  accepts(raw: unknown): boolean {
    return typeof raw === 'number';
  }
  parse(raw: unknown, path: string, issues: ConfigIssue[]): number | undefined {
    return checkNumber(raw, path, issues, this.rule);
  }
  json(): JsonSchema {
    const out: JsonSchema = { type: this.rule.integer ? 'integer' : 'number' };
    if (this.rule.min !== undefined) out.minimum = this.rule.min;
    if (this.rule.max !== undefined) out.maximum = this.rule.max;
    return out;
  }
  ts(): string {
    return 'number';
  }
}

export interface StringDoc extends Doc {
  /** A regular expression the value must match (also given to editors as `pattern`). */
  readonly pattern?: RegExp | undefined;
  /** The message when `pattern` does not match (default: `must match <pattern>`); ", got …" follows. */
  readonly patternMessage?: string | undefined;
  /** JSON Schema `format` (for editors only). */
  readonly format?: string | undefined;
  /** Accept the empty string too. */
  readonly empty?: boolean | undefined;
}

class StringSchema<F extends boolean> extends Schema<string, string, F> {
  readonly #meta: StringDoc;
  constructor(meta: StringDoc) {
    super(meta);
    this.#meta = meta;
  }
  accepts(raw: unknown): boolean {
    return typeof raw === 'string';
  }
  parse(raw: unknown, path: string, issues: ConfigIssue[]): string | undefined {
    if (typeof raw !== 'string' || (raw.length === 0 && !this.#meta.empty)) {
      issues.push({
        path,
        message: `must be a ${this.#meta.empty ? '' : 'non-empty '}string, got ${describe(raw)}`,
      });
      return undefined;
    }
    const re = this.#meta.pattern;
    if (re && !re.test(raw)) {
      issues.push({
        path,
        message: `${this.#meta.patternMessage ?? `must match ${re.source}`}, got ${describe(raw)}`,
      });
      return undefined;
    }
    return raw;
  }
  json(): JsonSchema {
    const out: JsonSchema = this.#meta.empty ? { type: 'string' } : { type: 'string', minLength: 1 };
    if (this.#meta.pattern) out.pattern = this.#meta.pattern.source;
    if (this.#meta.format) out.format = this.#meta.format;
    return out;
  }
  ts(): string {
    return 'string';
  }
}

export interface EnumDoc extends Doc {
  /** The message when the value is not one of them (default `must be one of a, b`); ", got …" follows. */
  readonly message?: string | undefined;
}

class EnumSchema<V extends string, F extends boolean> extends Schema<V, V, F> {
  readonly values: readonly V[];
  readonly #message: string | undefined;
  constructor(values: readonly V[], meta: EnumDoc) {
    super(meta);
    this.values = values;
    this.#message = meta.message;
  }
  accepts(raw: unknown): boolean {
    return typeof raw === 'string';
  }
  parse(raw: unknown, path: string, issues: ConfigIssue[]): V | undefined {
    if (typeof raw === 'string' && (this.values as readonly string[]).includes(raw)) return raw as V;
    issues.push({
      path,
      message: `${this.#message ?? `must be one of ${this.values.join(', ')}`}, got ${describe(raw)}`,
    });
    return undefined;
  }
  json(): JsonSchema {
    return { enum: [...this.values] };
  }
  ts(): string {
    return this.values.map((v) => JSON.stringify(v)).join(' | ');
  }
}

type Literal = string | number | boolean;

class LiteralSchema<V extends Literal, F extends boolean> extends Schema<V, V, F> {
  readonly value: V;
  constructor(value: V, meta: Doc) {
    super(meta);
    this.value = value;
  }
  accepts(raw: unknown): boolean {
    return raw === this.value;
  }
  parse(raw: unknown, path: string, issues: ConfigIssue[]): V | undefined {
    if (raw === this.value) return this.value;
    issues.push({ path, message: `must be ${JSON.stringify(this.value)}, got ${describe(raw)}` });
    return undefined;
  }
  json(): JsonSchema {
    return { const: this.value };
  }
  ts(): string {
    return JSON.stringify(this.value);
  }
}

/** The duration syntax `parseDuration` accepts, for editors. */
export const DURATION_PATTERN = '^\\s*\\d+(\\.\\d+)?(ms|s|m|h)\\s*$';

export interface DurationDoc extends Doc {
  /** `must be > 0` when the value is 0. */
  readonly positive?: boolean | undefined;
  /** `must be at least Nms` below it. */
  readonly min?: number | undefined;
}

class DurationSchema<F extends boolean> extends Schema<Duration, number, F> {
  readonly #meta: DurationDoc;
  constructor(meta: DurationDoc) {
    super(meta);
    this.#meta = meta;
  }
  accepts(raw: unknown): boolean {
    return typeof raw === 'number' || typeof raw === 'string';
  }
  parse(raw: unknown, path: string, issues: ConfigIssue[]): number | undefined {
    const ms = parseDuration(raw, path, issues);
    if (ms === undefined) return undefined;
    if (this.#meta.positive && ms <= 0) {
      issues.push({ path, message: 'must be > 0' });
      return undefined;
    }
    if (this.#meta.min !== undefined && ms < this.#meta.min) {
      issues.push({ path, message: `must be at least ${this.#meta.min}ms` });
      return undefined;
    }
    return ms;
  }
  json(e: JsonEmitter): JsonSchema {
    return e.ref('Duration', () => ({
      description: 'A duration: milliseconds (a number) or a number with a unit: 250ms, 2s, 1.5m, 1h.',
      anyOf: [
        { type: 'number', minimum: 0 },
        { type: 'string', pattern: DURATION_PATTERN },
      ],
    }));
  }
  ts(e: TsEmitter): string {
    e.use('Duration');
    return 'Duration';
  }
}

// ---------------------------------------------------------------------------------------------
// Containers

export interface ListDoc extends Doc {
  /** The message when the value is not a list (default `must be a list`); ", got …" follows. */
  readonly message?: string | undefined;
  /** At least one item. */
  readonly nonEmpty?: boolean | undefined;
  /** A comma-separated string is read as a list (`on: 'reset,503'`). */
  readonly commaSeparated?: boolean | undefined;
}

class ArraySchema<I, O, F extends boolean> extends Schema<readonly I[], O[], F> {
  readonly item: Schema<I, O, boolean>;
  readonly #meta: ListDoc;
  constructor(item: Schema<I, O, boolean>, meta: ListDoc) {
    super(meta);
    this.item = item;
    this.#meta = meta;
  }
  accepts(raw: unknown): boolean {
    return Array.isArray(raw) || (this.#meta.commaSeparated === true && typeof raw === 'string');
  }
  parse(raw: unknown, path: string, issues: ConfigIssue[], baseDir = ''): O[] | undefined {
    const list =
      this.#meta.commaSeparated && typeof raw === 'string'
        ? raw
            .split(',')
            .map((x) => x.trim())
            .filter(Boolean)
        : raw;
    if (!Array.isArray(list) || (this.#meta.nonEmpty && list.length === 0)) {
      issues.push({ path, message: `${this.#meta.message ?? 'must be a list'}, got ${describe(raw)}` });
      return undefined;
    }
    const out: O[] = [];
    list.forEach((item: unknown, i: number) => {
      const v = this.item.parse(item, join(path, i), issues, baseDir);
      if (v !== undefined) out.push(v);
    });
    return out;
  }
  json(e: JsonEmitter): JsonSchema {
    const arr: JsonSchema = { type: 'array', items: this.item.json(e) };
    if (this.#meta.nonEmpty) arr.minItems = 1;
    if (!this.#meta.commaSeparated) return arr;
    return { anyOf: [arr, { type: 'string', description: 'comma-separated' }] };
  }
  ts(e: TsEmitter): string {
    const arr = `readonly ${parens(this.item.ts(e))}[]`;
    return this.#meta.commaSeparated ? `${arr} | string` : arr;
  }
}

export interface RecordDoc extends Doc {
  /** Checks a key (push an issue at `path` to reject it). */
  readonly key?: ((name: string, path: string, issues: ConfigIssue[]) => void) | undefined;
  /** JSON Schema `propertyNames` pattern, for editors. */
  readonly keyPattern?: string | undefined;
}

class RecordSchema<I, O, F extends boolean> extends Schema<
  { readonly [key: string]: I },
  Record<string, O>,
  F
> {
  readonly value: Schema<I, O, boolean>;
  readonly #meta: RecordDoc;
  constructor(value: Schema<I, O, boolean>, meta: RecordDoc) {
    super(meta);
    this.value = value;
    this.#meta = meta;
  }
  accepts(raw: unknown): boolean {
    return isPlainObject(raw);
  }
  parse(raw: unknown, path: string, issues: ConfigIssue[], baseDir = ''): Record<string, O> | undefined {
    if (!isPlainObject(raw)) {
      issues.push({ path, message: `must be an object, got ${describe(raw)}` });
      return undefined;
    }
    const out: Record<string, O> = {};
    for (const [k, v] of Object.entries(raw)) {
      const p = join(path, k);
      this.#meta.key?.(k, p, issues);
      const parsed = this.value.parse(v, p, issues, baseDir);
      if (parsed !== undefined) out[k] = parsed;
    }
    return out;
  }
  json(e: JsonEmitter): JsonSchema {
    const out: JsonSchema = { type: 'object', additionalProperties: this.value.json(e) };
    if (this.#meta.keyPattern) out.propertyNames = { pattern: this.#meta.keyPattern };
    return out;
  }
  ts(e: TsEmitter): string {
    return `{ readonly [name: string]: ${this.value.ts(e)} }`;
  }
}

/** The fields of an object schema, by config key. */
export type Fields = { readonly [key: string]: AnySchema };

type FilledKeys<F extends Fields> = {
  [K in keyof F]: F[K] extends Schema<unknown, unknown, true> ? K : never;
}[keyof F];

/** What `ObjectSchema.parse` returns: every field, filled with its default when absent. */
export type ObjectOutput<F extends Fields> = {
  -readonly [K in keyof F]: K extends FilledKeys<F> ? OutputOf<F[K]> : OutputOf<F[K]> | undefined;
};

/** The input type of an object schema's fields (inferred; the generated types say more). */
export type ObjectInput<F extends Fields> = { readonly [K in keyof F]?: InputOf<F[K]> };

/** Fields contributed by a registry, and the interface they live in for TypeScript. */
export interface Extension {
  /** The augmentable interface of the generated types (`ServiceSections`, `MeshSections`). */
  readonly ts: string;
  /** The registered fields, at the time of the call. */
  fields(): Fields;
  /** Declares the interface `ts` names, when this module's generated types declare it. */
  declare?(e: TsEmitter): void;
}

export interface ObjectDoc extends Doc {
  /** The name of the generated interface (and of the JSON Schema definition); inline when absent. */
  readonly name?: string | undefined;
  /** Registered fields (config sections) accepted next to the declared ones. */
  readonly extensions?: readonly Extension[] | undefined;
}

/**
 * A config object: unknown keys are reported (`unknown field; expected one of: …`), each field is
 * validated at `path.key`, absent fields get their default, required ones are reported.
 */
export class ObjectSchema<F extends Fields, Fl extends boolean = false> extends Schema<
  ObjectInput<F>,
  ObjectOutput<F>,
  Fl
> {
  readonly fields: F;
  readonly #meta: ObjectDoc;
  constructor(fields: F, meta: ObjectDoc = {}) {
    super(meta);
    this.fields = fields;
    this.#meta = meta;
  }

  get name(): string | undefined {
    return this.#meta.name;
  }

  /** Declared and registered fields. */
  allFields(): Fields {
    const ext = this.#meta.extensions;
    if (!ext || ext.length === 0) return this.fields;
    const all: Record<string, AnySchema> = { ...this.fields };
    for (const x of ext) Object.assign(all, x.fields());
    return all;
  }

  accepts(raw: unknown): boolean {
    return isPlainObject(raw);
  }

  /** Reports every key of `obj` that is not a field (the same message as `checkKeys`). */
  checkKeys(obj: Record<string, unknown>, path: string, issues: ConfigIssue[]): void {
    checkKeys(obj, Object.keys(this.allFields()), path, issues);
  }

  parse(raw: unknown, path: string, issues: ConfigIssue[], baseDir = ''): ObjectOutput<F> | undefined {
    return this.#read(raw, path, issues, baseDir, true) as ObjectOutput<F> | undefined;
  }

  /**
   * Parses the one field `key` of `obj` (already known to be an object) at `path.key`: its value
   * when given and valid, else undefined (the caller layers it on a base).
   */
  field<K extends keyof F & string>(
    obj: Record<string, unknown>,
    key: K,
    path: string,
    issues: ConfigIssue[],
    baseDir = '',
  ): OutputOf<F[K]> | undefined {
    const v = obj[key];
    if (v === undefined) return undefined;
    return (this.fields[key] as AnySchema).parse(v, join(path, key), issues, baseDir) as
      | OutputOf<F[K]>
      | undefined;
  }

  /**
   * Like `parse`, without defaults: only the fields given (and valid) are set. For sections layered
   * on a base (a service's fields over `defaults`).
   */
  given(
    raw: unknown,
    path: string,
    issues: ConfigIssue[],
    baseDir = '',
  ): { -readonly [K in keyof F]?: OutputOf<F[K]> } | undefined {
    return this.#read(raw, path, issues, baseDir, false) as { [K in keyof F]?: OutputOf<F[K]> } | undefined;
  }

  #read(
    raw: unknown,
    path: string,
    issues: ConfigIssue[],
    baseDir: string,
    fill: boolean,
  ): Record<string, unknown> | undefined {
    if (!isPlainObject(raw)) {
      issues.push({ path, message: `must be an object, got ${describe(raw)}` });
      return undefined;
    }
    const fields = this.allFields();
    checkKeys(raw, Object.keys(fields), path, issues);
    const out: Record<string, unknown> = {};
    for (const [key, field] of Object.entries(fields)) {
      const v = raw[key];
      if (v === undefined) {
        const req = field.meta.required;
        if (req) issues.push({ path: join(path, key), message: req === true ? 'is required' : req });
        if (fill) out[key] = field.defaultValue();
        continue;
      }
      const parsed = field.parse(v, join(path, key), issues, baseDir);
      out[key] = parsed === undefined && fill ? field.defaultValue() : parsed;
    }
    return out;
  }

  json(e: JsonEmitter): JsonSchema {
    const build = (): JsonSchema => {
      const properties: Record<string, JsonSchema> = {};
      const required: string[] = [];
      for (const [key, field] of Object.entries(this.allFields())) {
        properties[key] = withDoc(field.json(e), field.meta);
        if (field.meta.required) required.push(key);
      }
      const out: JsonSchema = { type: 'object', properties, additionalProperties: false };
      if (required.length > 0) out.required = required;
      return out;
    };
    const name = this.#meta.name;
    return name ? e.ref(name, () => withDoc(build(), { doc: this.meta.doc })) : build();
  }

  ts(e: TsEmitter): string {
    const name = this.#meta.name;
    if (!name) return tsObject(this.fields, e);
    return e.declare(name, () => {
      const exts = this.#meta.extensions ?? [];
      for (const x of exts) {
        e.use(x.ts);
        x.declare?.(e);
      }
      const ext = exts.map((x) => x.ts);
      return `${tsDoc(this.meta.doc ? { doc: this.meta.doc } : {})}export interface ${name}${
        ext.length > 0 ? ` extends ${ext.join(', ')}` : ''
      } ${tsObject(this.fields, e)}`;
    });
  }
}

export interface UnionDoc extends Doc {
  /** The message when no option reads the value; ", got …" follows. Default: the last option's own. */
  readonly message?: string | undefined;
}

class UnionSchema<I, O, F extends boolean> extends Schema<I, O, F> {
  readonly options: readonly Schema<I, O, boolean>[];
  readonly #message: string | undefined;
  constructor(options: readonly Schema<I, O, boolean>[], meta: UnionDoc) {
    super(meta);
    this.options = options;
    this.#message = meta.message;
  }
  accepts(raw: unknown): boolean {
    return this.options.some((o) => o.accepts(raw));
  }
  parse(raw: unknown, path: string, issues: ConfigIssue[], baseDir = ''): O | undefined {
    for (const o of this.options) if (o.accepts(raw)) return o.parse(raw, path, issues, baseDir);
    if (this.#message !== undefined) {
      issues.push({ path, message: `${this.#message}, got ${describe(raw)}` });
      return undefined;
    }
    return this.options[this.options.length - 1]?.parse(raw, path, issues, baseDir);
  }
  json(e: JsonEmitter): JsonSchema {
    return { anyOf: this.options.map((o) => o.json(e)) };
  }
  ts(e: TsEmitter): string {
    return this.options.map((o) => o.ts(e)).join(' | ');
  }
}

export interface CustomDef<Out> {
  /** The TypeScript input type (names in it must be declared or imported by the generator). */
  readonly ts: string | ((e: TsEmitter) => string);
  /** The JSON Schema for editors. */
  readonly json: JsonSchema | ((e: JsonEmitter) => JsonSchema);
  /** JS types read (for unions); default: anything. */
  readonly accepts?: ((raw: unknown) => boolean) | undefined;
  readonly parse: (raw: unknown, path: string, issues: ConfigIssue[], baseDir: string) => Out | undefined;
}

class CustomSchema<I, O, F extends boolean> extends Schema<I, O, F> {
  readonly #def: CustomDef<O>;
  constructor(def: CustomDef<O>, meta: Doc) {
    super(meta);
    this.#def = def;
  }
  accepts(raw: unknown): boolean {
    return this.#def.accepts ? this.#def.accepts(raw) : true;
  }
  parse(raw: unknown, path: string, issues: ConfigIssue[], baseDir = ''): O | undefined {
    return this.#def.parse(raw, path, issues, baseDir);
  }
  json(e: JsonEmitter): JsonSchema {
    const j = this.#def.json;
    return typeof j === 'function' ? j(e) : j;
  }
  ts(e: TsEmitter): string {
    const t = this.#def.ts;
    return typeof t === 'function' ? t(e) : t;
  }
}

// ---------------------------------------------------------------------------------------------
// The builder

type D<O> = O extends { readonly default: unknown } ? true : false;

/**
 * meshlet's config schema builder. Each option is declared once, with its doc and default:
 *
 * ```ts
 * const options = s.object({
 *   choiceCount: s.integer({ min: 2, max: 100, default: 2, doc: 'Endpoints sampled per pick.' }),
 * }, { name: 'LeastRequestOptions' });
 * ```
 */
export const s = {
  boolean<const O extends Doc = Doc>(meta?: O): Schema<boolean, boolean, D<O>> {
    return new BooleanSchema(meta);
  },
  number<const O extends NumberDoc = NumberDoc>(meta?: O): Schema<number, number, D<O>> {
    return new NumberSchema(meta ?? {});
  },
  integer<const O extends NumberDoc = NumberDoc>(meta?: O): Schema<number, number, D<O>> {
    return new NumberSchema({ ...meta, integer: true });
  },
  string<const O extends StringDoc = StringDoc>(meta?: O): Schema<string, string, D<O>> {
    return new StringSchema(meta ?? {});
  },
  enum<const V extends string, const O extends EnumDoc = EnumDoc>(
    values: readonly V[],
    meta?: O,
  ): Schema<V, V, D<O>> {
    return new EnumSchema(values, meta ?? {});
  },
  literal<const V extends Literal, const O extends Doc = Doc>(value: V, meta?: O): Schema<V, V, D<O>> {
    return new LiteralSchema(value, meta ?? {});
  },
  duration<const O extends DurationDoc = DurationDoc>(meta?: O): Schema<Duration, number, D<O>> {
    return new DurationSchema(meta ?? {});
  },
  array<I, Out, const O extends ListDoc = ListDoc>(
    item: Schema<I, Out, boolean>,
    meta?: O,
  ): Schema<readonly I[], Out[], D<O>> {
    return new ArraySchema(item, meta ?? {});
  },
  record<I, Out, const O extends RecordDoc = RecordDoc>(
    value: Schema<I, Out, boolean>,
    meta?: O,
  ): Schema<{ readonly [key: string]: I }, Record<string, Out>, D<O>> {
    return new RecordSchema(value, meta ?? {});
  },
  object<const F extends Fields, const O extends ObjectDoc = ObjectDoc>(
    fields: F,
    meta?: O,
  ): ObjectSchema<F, D<O>> {
    return new ObjectSchema<F, D<O>>(fields, meta);
  },
  union<const S extends readonly AnySchema[], const O extends UnionDoc = UnionDoc>(
    options: S,
    meta?: O,
  ): Schema<InputOf<S[number]>, OutputOf<S[number]>, D<O>> {
    return new UnionSchema(
      options as unknown as Schema<InputOf<S[number]>, OutputOf<S[number]>, boolean>[],
      meta ?? {},
    );
  },
  /** An option whose shape the builders cannot say (checked by `parse`; typed and described by hand). */
  custom<In, Out, const O extends Doc = Doc>(def: CustomDef<Out>, meta?: O): Schema<In, Out, D<O>> {
    return new CustomSchema<In, Out, D<O>>(def, meta ?? {});
  },
};

/**
 * The JSON Schema of one entry of a registry chosen by a tag (`{ policy: 'ring_hash', ...options }`,
 * `{ type: 'dns', ...options }`): the tag's constant and the entry's options. An entry registered
 * without a schema accepts any options.
 */
export function taggedJson(
  e: JsonEmitter,
  tag: string,
  name: string,
  options: ObjectSchema<Fields, boolean> | undefined,
  tagRequired = true,
): JsonSchema {
  const properties: Record<string, JsonSchema> = { [tag]: { const: name } };
  const required: string[] = tagRequired ? [tag] : [];
  if (options) {
    for (const [key, field] of Object.entries(options.allFields())) {
      properties[key] = withDoc(field.json(e), field.meta);
      if (field.meta.required) required.push(key);
    }
  }
  const out: JsonSchema = { type: 'object', properties };
  if (options) out.additionalProperties = false;
  if (options?.meta.doc) out.description = options.meta.doc;
  if (required.length > 0) out.required = required;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Emitters

function withDoc(schema: JsonSchema, meta: Doc): JsonSchema {
  // draft-07 ignores the siblings of `$ref`: a documented reference is wrapped.
  const out: JsonSchema =
    '$ref' in schema && (meta.doc || meta.defaultText || meta.default !== undefined)
      ? { allOf: [schema] }
      : { ...schema };
  const text = describeDoc(meta);
  if (text) out.description = text;
  if (meta.default !== undefined) out.default = meta.default;
  return out;
}

function describeDoc(meta: Doc): string | undefined {
  const parts: string[] = [];
  if (meta.doc) parts.push(meta.doc);
  if (meta.defaultText !== undefined) parts.push(`Default: ${meta.defaultText}.`);
  else if (meta.default !== undefined) parts.push(`Default: ${formatDefault(meta.default)}.`);
  return parts.length > 0 ? parts.join(' ') : undefined;
}

function formatDefault(v: unknown): string {
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** Collects the named definitions (`$ref`s) of a JSON Schema. */
export class JsonEmitter {
  readonly definitions: Record<string, JsonSchema> = {};
  ref(name: string, build: () => JsonSchema): JsonSchema {
    if (!(name in this.definitions)) {
      this.definitions[name] = {};
      this.definitions[name] = build();
    }
    return { $ref: `#/definitions/${name}` };
  }
}

/** Collects the declarations of generated TypeScript types. */
export class TsEmitter {
  /** Declarations made here, in order. */
  readonly declarations = new Map<string, string>();
  /** Names referred to (declared here or elsewhere). */
  readonly used = new Set<string>();
  /** Names declared by another module (the generator imports them instead). */
  readonly external: ReadonlySet<string>;
  constructor(external: Iterable<string> = []) {
    this.external = new Set(external);
  }
  use(name: string): void {
    this.used.add(name);
  }
  declare(name: string, build: () => string): string {
    this.used.add(name);
    if (this.external.has(name) || this.declarations.has(name)) return name;
    this.declarations.set(name, '');
    this.declarations.set(name, build());
    return name;
  }
}

/** A JSDoc comment with the option's doc and default (empty when there is neither). */
export function tsDoc(meta: Doc, indent = ''): string {
  const lines: string[] = [];
  if (meta.doc) lines.push(...meta.doc.split('\n'));
  if (meta.defaultText !== undefined) lines.push(`@default ${meta.defaultText}`);
  else if (meta.default !== undefined) lines.push(`@default ${JSON.stringify(meta.default)}`);
  if (lines.length === 0) return '';
  if (lines.length === 1) return `${indent}/** ${lines[0]?.replaceAll('*/', '*\\/')} */\n`;
  return `${indent}/**\n${lines.map((l) => `${indent} * ${l.replaceAll('*/', '*\\/')}`.trimEnd()).join('\n')}\n${indent} */\n`;
}

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

function tsKey(key: string): string {
  return IDENT.test(key) ? key : JSON.stringify(key);
}

function parens(t: string): string {
  return /[|&\s]/.test(t) && !/^\{[\s\S]*\}$/.test(t) ? `(${t})` : t;
}

/** `{ key?: T; … }` with each field's doc, as an indented type literal. */
export function tsObject(fields: Fields, e: TsEmitter): string {
  const entries = Object.entries(fields);
  if (entries.length === 0) return '{}';
  const body = entries
    .map(([key, field]) => {
      const t = field.ts(e);
      return `${tsDoc(field.meta, '  ')}  readonly ${tsKey(key)}${field.meta.required ? '' : '?'}: ${indentType(t)};`;
    })
    .join('\n');
  return `{\n${body}\n}`;
}

function indentType(t: string): string {
  return t.includes('\n') ? t.replaceAll('\n', '\n  ') : t;
}
