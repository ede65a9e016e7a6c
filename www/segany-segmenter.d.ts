// Types of <segany-segmenter> (segany-segmenter.js).

/** COCO run-length encoding, as pycocotools writes it (column-major, compressed counts). */
export interface CocoRle {
  size: [height: number, width: number];
  counts: string;
}

/** A polygon ring list: the outer ring, then its holes; vertices on pixel corners. */
export interface Polygon {
  exterior: [number, number][];
  holes: [number, number][][];
}

/** An object kept with commit(). */
export interface SegmentedObject {
  id: number;
  name: string;
  visible: boolean;
  /** The decoder's predicted IoU of the chosen mask. */
  score: number;
  area: number;
  /** [x, y, width, height] in image pixels. */
  bbox: [number, number, number, number];
  segmentation: CocoRle;
  polygons: Polygon[];
}

/** An object saved earlier, for loadObjects(). */
export interface SavedObject {
  name?: string;
  score?: number;
  segmentation: CocoRle;
}

export interface ReadyDetail { width: number; height: number; model: string | null }
export interface MaskChangeDetail {
  /** Predicted IoU of whole, part, subpart (empty when there is no mask). */
  scores: number[];
  /** The chosen mask (0 whole, 1 part, 2 subpart), null when there is none. */
  selected: number | null;
  area: number;
  bbox: [number, number, number, number] | null;
}
export interface ErrorDetail { message: string }

export interface SeganySegmenterEventMap extends HTMLElementEventMap {
  ready: CustomEvent<ReadyDetail>;
  'mask-change': CustomEvent<MaskChangeDetail>;
  'object-commit': CustomEvent<SegmentedObject>;
  error: CustomEvent<ErrorDetail>;
}

/**
 * `<segany-segmenter src server model embed-on precision>`: attributes `src` (image URL), `server`
 * (segany base URL; default: where the script came from), `model` (model id; default: the
 * server's default), `embed-on` (`auto`: WebGPU when the browser has an adapter for the model,
 * else the server; `webgpu`; `server`), `precision` (`f16` weights, the default, or `f32`).
 */
export declare class SeganySegmenter extends HTMLElement {
  setImage(source: string | URL | Blob | ImageBitmap | HTMLImageElement | HTMLCanvasElement | OffscreenCanvas): Promise<void>;
  addPoint(x: number, y: number, label?: 0 | 1): Promise<void>;
  setBox(x0: number, y0: number, x1: number, y1: number): Promise<void>;
  selectMask(index: 0 | 1 | 2): Promise<void>;
  commit(name?: string): Promise<number | undefined>;
  undo(): Promise<void>;
  redo(): Promise<void>;
  cancel(): Promise<void>;
  clear(): Promise<void>;
  getObjects(): Promise<SegmentedObject[]>;
  loadObjects(objects: SavedObject[]): Promise<void>;
  /** The current image's embedding in segany's SEGANYE1 wire format, or null before it has come. */
  getEmbedding(): Promise<Uint8Array | null>;
  setEmbedOn(where: 'auto' | 'webgpu' | 'server'): Promise<void>;
  destroy(): Promise<void>;
  addEventListener<K extends keyof SeganySegmenterEventMap>(
    type: K, listener: (this: SeganySegmenter, ev: SeganySegmenterEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject, options?: boolean | AddEventListenerOptions): void;
}

declare global {
  interface HTMLElementTagNameMap { 'segany-segmenter': SeganySegmenter }
}
