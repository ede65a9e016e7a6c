//! The annotation session of one image: the object being drawn (its points, box and the
//! decoder's three candidate masks), the committed objects, and undo/redo over both. No browser
//! in here: the page feeds it events and decoder results, and draws what it holds.

use std::rc::Rc;

use segany_predict::predictor::LOW_RES;
use segany_predict::{Point, Prediction, Prompt};

/// The object being drawn.
#[derive(Debug, Clone, Default)]
pub struct Draft {
    pub points: Vec<Point>,
    /// `(x0, y0, x1, y1)` in image pixels.
    pub bbox: Option<[f64; 4]>,
    /// The decoder's answer to the current points and box, once it has arrived.
    pub prediction: Option<Rc<Prediction>>,
    /// Which candidate mask is chosen (whole, part, subpart).
    pub selected: usize,
}

impl Draft {
    pub fn is_empty(&self) -> bool {
        self.points.is_empty() && self.bbox.is_none()
    }

    /// The chosen mask, `H × W` of 0/1.
    pub fn mask(&self) -> Option<&[u8]> {
        self.prediction.as_ref().map(|p| p.mask(self.selected.min(p.num_masks - 1)))
    }
}

/// A committed object.
#[derive(Debug, Clone)]
pub struct Object {
    pub id: u32,
    pub name: String,
    pub visible: bool,
    /// `H × W` of 0/1.
    pub mask: Rc<Vec<u8>>,
    /// The decoder's predicted IoU of the chosen mask.
    pub score: f32,
}

#[derive(Debug, Clone, Default)]
struct State {
    draft: Draft,
    objects: Vec<Object>,
}

/// What a caller must send to the decoder after an edit: the prompt, tagged with the revision
/// whose result it is.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeRequest {
    pub revision: u64,
    pub prompt: Prompt,
}

/// One image's annotations with their history.
#[derive(Debug)]
pub struct Session {
    /// `(h, w)` of the image.
    pub size: [usize; 2],
    state: State,
    undo: Vec<State>,
    redo: Vec<State>,
    /// Bumped by every change of the draft's prompt, so that late decoder results are dropped.
    revision: u64,
    next_id: u32,
}

/// How many steps undo goes back.
const HISTORY: usize = 200;

impl Session {
    pub fn new(size: [usize; 2]) -> Self {
        Self { size, state: State::default(), undo: Vec::new(), redo: Vec::new(), revision: 0, next_id: 1 }
    }

    pub fn draft(&self) -> &Draft {
        &self.state.draft
    }

    pub fn objects(&self) -> &[Object] {
        &self.state.objects
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    /// Records the current state for undo before an edit.
    fn checkpoint(&mut self) {
        self.undo.push(self.state.clone());
        if self.undo.len() > HISTORY {
            self.undo.remove(0);
        }
        self.redo.clear();
    }

    /// The prompt of the draft as it is now, refined by the chosen mask of its current
    /// prediction (the previous click's low-resolution logits).
    pub fn prompt(&self) -> Prompt {
        self.prompt_with(None)
    }

    /// The draft's prompt with one more point (a click not made yet: the hover preview).
    pub fn prompt_with(&self, extra: Option<Point>) -> Prompt {
        let d = &self.state.draft;
        let mut points = d.points.clone();
        points.extend(extra);
        let mask_input = d.prediction.as_ref().map(|p| p.low_res(d.selected.min(p.num_masks - 1)).to_vec());
        debug_assert!(mask_input.as_ref().is_none_or(|m| m.len() == LOW_RES * LOW_RES));
        Prompt { points, bbox: d.bbox, mask_input, multimask: true }
    }

    /// A click: a foreground (`label` 1) or background (0) point.
    pub fn add_point(&mut self, point: Point) -> Option<DecodeRequest> {
        // The refinement uses the mask shown before this click.
        let request_prompt = self.prompt_with(Some(point));
        self.checkpoint();
        self.state.draft.points.push(point);
        self.revision += 1;
        Some(DecodeRequest { revision: self.revision, prompt: request_prompt })
    }

    /// A dragged box; it replaces an earlier box and combines with the points.
    pub fn set_box(&mut self, bbox: [f64; 4]) -> Option<DecodeRequest> {
        let [x0, y0, x1, y1] = bbox;
        let bbox = [x0.min(x1), y0.min(y1), x0.max(x1), y0.max(y1)];
        self.checkpoint();
        self.state.draft.bbox = Some(bbox);
        self.revision += 1;
        let mut prompt = self.prompt();
        // A new box is a new question: do not refine the old answer.
        prompt.mask_input = None;
        Some(DecodeRequest { revision: self.revision, prompt })
    }

    /// The decoder's answer for `revision`; ignored (false) when the draft has changed since.
    /// The candidate with the highest predicted IoU is chosen.
    pub fn apply_prediction(&mut self, revision: u64, prediction: impl Into<Rc<Prediction>>) -> bool {
        if revision != self.revision || self.state.draft.is_empty() {
            return false;
        }
        let prediction = prediction.into();
        let best = best_index(&prediction.iou_predictions);
        let d = &mut self.state.draft;
        d.prediction = Some(prediction);
        d.selected = best;
        true
    }

    /// Chooses candidate `i` (0 = whole, 1 = part, 2 = subpart). Undoable.
    pub fn select(&mut self, i: usize) -> bool {
        let n = self.state.draft.prediction.as_ref().map_or(0, |p| p.num_masks);
        if i >= n || i == self.state.draft.selected {
            return false;
        }
        self.checkpoint();
        self.state.draft.selected = i;
        true
    }

    /// Turns the draft's chosen mask into an object. Returns its id.
    pub fn commit(&mut self) -> Option<u32> {
        self.commit_named(None)
    }

    /// [`Session::commit`], naming the object (else "object N").
    pub fn commit_named(&mut self, name: Option<String>) -> Option<u32> {
        let d = &self.state.draft;
        let p = d.prediction.as_ref()?;
        let i = d.selected.min(p.num_masks - 1);
        let (mask, score) = (Rc::new(p.mask(i).to_vec()), p.iou_predictions[i]);
        self.checkpoint();
        let id = self.next_id;
        self.next_id += 1;
        let name = name.unwrap_or_else(|| format!("object {id}"));
        self.state.objects.push(Object { id, name, visible: true, mask, score });
        self.state.draft = Draft::default();
        self.revision += 1;
        Some(id)
    }

    /// Drops the draft (Esc).
    pub fn cancel(&mut self) -> bool {
        if self.state.draft.is_empty() {
            return false;
        }
        self.checkpoint();
        self.state.draft = Draft::default();
        self.revision += 1;
        true
    }

    /// Drops the draft and every object.
    pub fn clear(&mut self) -> bool {
        if self.state.draft.is_empty() && self.state.objects.is_empty() {
            return false;
        }
        self.checkpoint();
        self.state = State::default();
        self.revision += 1;
        true
    }

    fn object_mut(&mut self, id: u32) -> Option<&mut Object> {
        self.state.objects.iter_mut().find(|o| o.id == id)
    }

    pub fn rename(&mut self, id: u32, name: &str) -> bool {
        if self.state.objects.iter().all(|o| o.id != id || o.name == name) {
            return false;
        }
        self.checkpoint();
        self.object_mut(id).expect("checked").name = name.to_string();
        true
    }

    pub fn toggle_visible(&mut self, id: u32) -> bool {
        if self.object_mut(id).is_none() {
            return false;
        }
        self.checkpoint();
        let o = self.object_mut(id).expect("checked");
        o.visible = !o.visible;
        true
    }

    pub fn delete(&mut self, id: u32) -> bool {
        if self.object_mut(id).is_none() {
            return false;
        }
        self.checkpoint();
        self.state.objects.retain(|o| o.id != id);
        true
    }

    /// Adds a finished mask as an object (from "segment everything", or an import).
    pub fn add_object(&mut self, mask: Vec<u8>, score: f32) -> u32 {
        assert_eq!(mask.len(), self.size[0] * self.size[1], "mask size");
        self.checkpoint();
        let id = self.next_id;
        self.next_id += 1;
        self.state.objects.push(Object { id, name: format!("object {id}"), visible: true, mask: Rc::new(mask), score });
        id
    }

    /// Puts back an object saved earlier (annotations reloaded): not an edit, so not undoable.
    pub fn restore_object(&mut self, mask: Vec<u8>, score: f32, name: String) -> u32 {
        assert_eq!(mask.len(), self.size[0] * self.size[1], "mask size");
        let id = self.next_id;
        self.next_id += 1;
        let name = if name.is_empty() { format!("object {id}") } else { name };
        self.state.objects.push(Object { id, name, visible: true, mask: Rc::new(mask), score });
        id
    }

    /// Steps back; the draft's prompt may have changed, so results in flight are dropped.
    pub fn undo(&mut self) -> bool {
        let Some(previous) = self.undo.pop() else { return false };
        self.redo.push(std::mem::replace(&mut self.state, previous));
        self.revision += 1;
        true
    }

    pub fn redo(&mut self) -> bool {
        let Some(next) = self.redo.pop() else { return false };
        self.undo.push(std::mem::replace(&mut self.state, next));
        self.revision += 1;
        true
    }
}

/// Index of the largest value (the first on ties), 0 for none.
pub fn best_index(values: &[f32]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, &v)| if v > values[best] { i } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prediction(size: [usize; 2], ious: &[f32], fill: u8) -> Prediction {
        let n = ious.len();
        let pixels = size[0] * size[1];
        Prediction {
            masks: (0..n * pixels).map(|i| ((i / pixels) as u8 + fill) % 2).collect(),
            iou_predictions: ious.to_vec(),
            low_res_logits: (0..n * LOW_RES * LOW_RES).map(|i| (i / (LOW_RES * LOW_RES)) as f32 + fill as f32).collect(),
            num_masks: n,
            size,
        }
    }

    fn point(x: f64, label: i32) -> Point {
        Point { x, y: 1.0, label }
    }

    #[test]
    fn a_click_asks_for_three_masks_and_the_best_is_chosen() {
        let mut s = Session::new([2, 3]);
        let req = s.add_point(point(1.0, 1)).unwrap();
        assert!(req.prompt.multimask);
        assert_eq!(req.prompt.points.len(), 1);
        assert!(req.prompt.mask_input.is_none(), "nothing to refine yet");
        assert!(s.apply_prediction(req.revision, prediction([2, 3], &[0.5, 0.9, 0.7], 0)));
        assert_eq!(s.draft().selected, 1);
        assert_eq!(s.draft().mask().unwrap(), &[1, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn the_next_click_refines_with_the_chosen_masks_logits() {
        let mut s = Session::new([2, 3]);
        let r = s.add_point(point(1.0, 1)).unwrap();
        s.apply_prediction(r.revision, prediction([2, 3], &[0.1, 0.2, 0.9], 0));
        let r2 = s.add_point(point(2.0, 0)).unwrap();
        let mask_input = r2.prompt.mask_input.unwrap();
        assert_eq!(mask_input.len(), LOW_RES * LOW_RES);
        assert!(mask_input.iter().all(|&v| v == 2.0), "logits of candidate 2");
        assert_eq!(r2.prompt.points.iter().map(|p| p.label).collect::<Vec<_>>(), vec![1, 0]);
    }

    #[test]
    fn late_results_are_dropped() {
        let mut s = Session::new([2, 3]);
        let r1 = s.add_point(point(1.0, 1)).unwrap();
        let r2 = s.add_point(point(2.0, 1)).unwrap();
        assert!(!s.apply_prediction(r1.revision, prediction([2, 3], &[1.0, 0.0, 0.0], 0)));
        assert!(s.apply_prediction(r2.revision, prediction([2, 3], &[1.0, 0.0, 0.0], 0)));
        s.undo();
        assert!(!s.apply_prediction(r2.revision, prediction([2, 3], &[1.0, 0.0, 0.0], 0)), "undo changed the draft");
    }

    #[test]
    fn undo_and_redo_walk_through_points_selection_and_commits() {
        let mut s = Session::new([2, 3]);
        let r = s.add_point(point(1.0, 1)).unwrap();
        s.apply_prediction(r.revision, prediction([2, 3], &[0.9, 0.1, 0.1], 0));
        assert!(s.select(1));
        assert!(!s.select(7), "no such candidate");
        let id = s.commit().unwrap();
        assert_eq!(s.objects().len(), 1);
        assert_eq!(*s.objects()[0].mask, vec![1; 6], "candidate 1 of the fill pattern (all ones)");
        assert!(s.draft().is_empty());

        assert!(s.undo()); // commit
        assert_eq!(s.objects().len(), 0);
        assert_eq!(s.draft().selected, 1);
        assert!(s.undo()); // selection
        assert_eq!(s.draft().selected, 0);
        assert!(s.undo()); // the point
        assert!(s.draft().is_empty() && s.draft().prediction.is_none());
        assert!(!s.undo());
        assert!(s.redo() && s.redo() && s.redo());
        assert_eq!(s.objects()[0].id, id);
        assert!(!s.redo());
    }

    #[test]
    fn a_box_combines_with_points_and_is_normalised() {
        let mut s = Session::new([10, 10]);
        s.add_point(point(1.0, 1));
        let r = s.set_box([8.0, 9.0, 2.0, 1.0]).unwrap();
        assert_eq!(r.prompt.bbox, Some([2.0, 1.0, 8.0, 9.0]));
        assert_eq!(r.prompt.points.len(), 1);
    }

    #[test]
    fn objects_are_renamed_hidden_deleted_and_cleared_undoably() {
        let mut s = Session::new([1, 2]);
        let a = s.add_object(vec![1, 0], 0.5);
        let b = s.add_object(vec![0, 1], 0.6);
        assert!(s.rename(a, "car"));
        assert!(!s.rename(a, "car"), "no change, no history");
        assert!(s.toggle_visible(b));
        assert!(!s.objects()[1].visible);
        assert!(s.delete(a));
        assert_eq!(s.objects().len(), 1);
        assert!(s.clear());
        assert!(s.objects().is_empty());
        s.undo();
        s.undo();
        assert_eq!(s.objects()[0].name, "car");
        assert!(!s.cancel(), "no draft to cancel");
    }
}
