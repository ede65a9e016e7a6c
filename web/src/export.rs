//! What the page exports: COCO JSON with RLE masks (what pycocotools reads), polygons with holes
//! as JSON, and a PNG label map.

use segany_predict::masks::Rle;
use segany_predict::polygons::{Polygon, polygons};
use serde_json::{Value, json};

use crate::session::Object;

/// A COCO dataset of one image, one annotation per object (in the order given), category
/// "object".
pub fn coco(objects: &[&Object], [h, w]: [usize; 2], file_name: &str) -> Value {
    let annotations: Vec<Value> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let rle = Rle::encode(&o.mask, [h, w]);
            let area = rle.area().expect("own encoding");
            let bbox = rle.bbox().expect("own encoding");
            json!({
                "id": i + 1,
                "image_id": 1,
                "category_id": 1,
                "segmentation": rle,
                "area": area,
                "bbox": bbox,
                "iscrowd": 0,
                "score": o.score,
                "name": o.name,
            })
        })
        .collect();
    json!({
        "info": {"description": "segany annotations"},
        "images": [{"id": 1, "width": w, "height": h, "file_name": file_name}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "object"}],
    })
}

/// One object as the widget hands it out (`getObjects()`, the `object-commit` event): COCO RLE,
/// its area and bbox, and the same mask as polygons with holes.
pub fn object_json(o: &Object, [h, w]: [usize; 2]) -> Value {
    let rle = Rle::encode(&o.mask, [h, w]);
    json!({
        "id": o.id,
        "name": o.name,
        "visible": o.visible,
        "score": o.score,
        "area": rle.area().expect("own encoding"),
        "bbox": rle.bbox().expect("own encoding"),
        "segmentation": rle,
        "polygons": polygons(&o.mask, [h, w]),
    })
}

/// Each object's regions as polygons with holes (vertices on pixel corners).
pub fn polygons_json(objects: &[&Object], [h, w]: [usize; 2], file_name: &str) -> Value {
    let objects: Vec<Value> = objects
        .iter()
        .map(|o| {
            let polys: Vec<Polygon> = polygons(&o.mask, [h, w]);
            json!({"name": o.name, "score": o.score, "polygons": polys})
        })
        .collect();
    json!({"image": {"width": w, "height": h, "file_name": file_name}, "objects": objects})
}

/// An 8-bit grey PNG where pixel value `i` (1…255) is the `i`-th object, 0 background; a later
/// object covers an earlier one where they overlap.
pub fn label_png(objects: &[&Object], [h, w]: [usize; 2]) -> Vec<u8> {
    let mut labels = vec![0u8; h * w];
    for (i, o) in objects.iter().enumerate().take(255) {
        for (l, &m) in labels.iter_mut().zip(o.mask.iter()) {
            if m != 0 {
                *l = i as u8 + 1;
            }
        }
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&labels, w as u32, h as u32, image::ExtendedColorType::L8)
        .expect("encoding to memory");
    png
}

use image::ImageEncoder as _;

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;

    fn object(id: u32, mask: Vec<u8>) -> Object {
        Object { id, name: format!("o{id}"), visible: true, mask: Rc::new(mask), score: 0.5 }
    }

    #[test]
    fn coco_rle_decodes_to_the_object_masks() {
        let a = object(1, vec![1, 1, 0, 0, 1, 0]);
        let b = object(2, vec![0, 0, 1, 1, 1, 1]);
        let json = coco(&[&a, &b], [2, 3], "x.png");
        for (ann, o) in json["annotations"].as_array().unwrap().iter().zip([&a, &b]) {
            let rle: Rle = serde_json::from_value(ann["segmentation"].clone()).unwrap();
            assert_eq!(rle.decode().unwrap(), *o.mask);
            assert_eq!(ann["area"], o.mask.iter().map(|&v| v as u64).sum::<u64>());
        }
        assert_eq!(json["images"][0]["width"], 3);
    }

    #[test]
    fn object_json_carries_the_mask_as_rle_and_polygons() {
        #[rustfmt::skip]
        let mask = vec![
            0, 1, 1, 0,
            0, 1, 0, 0,
            0, 0, 0, 0,
        ];
        let v = object_json(&object(7, mask.clone()), [3, 4]);
        assert_eq!(v["id"], 7);
        assert_eq!(v["area"], 3);
        assert_eq!(v["bbox"], json!([1, 0, 2, 2]));
        let rle: Rle = serde_json::from_value(v["segmentation"].clone()).unwrap();
        assert_eq!(rle.decode().unwrap(), mask);
        let polys: Vec<Polygon> = serde_json::from_value(v["polygons"].clone()).unwrap();
        assert_eq!(segany_predict::polygons::rasterize(&polys, [3, 4]), mask);
    }

    #[test]
    fn label_png_numbers_objects_in_order() {
        let a = object(1, vec![1, 1, 0, 0]);
        let b = object(2, vec![0, 1, 1, 0]);
        let png = label_png(&[&a, &b], [2, 2]);
        let img = image::load_from_memory(&png).unwrap().into_luma8();
        assert_eq!(img.into_raw(), vec![1, 2, 2, 0]);
    }

    #[test]
    fn polygons_rasterize_back() {
        let a = object(1, vec![1, 1, 1, 1, 0, 1, 1, 1, 1]);
        let json = polygons_json(&[&a], [3, 3], "x");
        let polys: Vec<Polygon> = serde_json::from_value(json["objects"][0]["polygons"].clone()).unwrap();
        assert_eq!(polys[0].holes.len(), 1);
        assert_eq!(segany_predict::polygons::rasterize(&polys, [3, 3]), *a.mask);
    }
}
