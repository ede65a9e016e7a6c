//! COCO RLE against pycocotools: `tests/fixtures/rle/pycocotools.json` is written by
//! `scripts/make_rle_vectors.py` from pycocotools' own `encode`, `area` and `toBbox`.

mod common;

use segany_predict::masks::{Counts, Rle};

#[test]
fn rle_matches_pycocotools_encode_area_bbox_and_decode() {
    let cases = common::json(&common::repo().join("tests/fixtures/rle/pycocotools.json"));
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 9);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let size: [usize; 2] = serde_json::from_value(case["size"].clone()).unwrap();
        let mask: Vec<u8> =
            case["rows"].as_array().unwrap().iter().flat_map(|r| r.as_str().unwrap().bytes().map(|b| b - b'0')).collect();
        let rle = Rle::encode(&mask, size);
        assert_eq!(rle.counts, Counts::Compressed(case["counts"].as_str().unwrap().into()), "{name}: counts");
        assert_eq!(rle.area().unwrap(), case["area"].as_u64().unwrap(), "{name}: area");
        let bbox: [u32; 4] = serde_json::from_value(case["bbox"].clone()).unwrap();
        assert_eq!(rle.bbox().unwrap(), bbox, "{name}: bbox");
        assert_eq!(rle.decode().unwrap(), mask, "{name}: decode");
        let runs: Vec<u32> = serde_json::from_value(case["runs"].clone()).unwrap();
        let plain = Rle { size, counts: Counts::Runs(runs) };
        assert_eq!(plain.decode().unwrap(), mask, "{name}: uncompressed counts");
        assert_eq!(plain.compressed().unwrap(), rle, "{name}: uncompressed → compressed");
    }
}
