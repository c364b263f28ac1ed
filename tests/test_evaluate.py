from zoofusion.core.candidates import kinds_of, rank
from zoofusion.core.protocol import VERDICT_METHODS
from zoofusion.render.tables import write_table
from zoofusion.steps.evaluate import baseline_table, study_table


def _row(cid, kind, val_acc, test_acc, dom="A"):
    m = {}
    for split, acc in (("val", val_acc), ("test", test_acc)):
        for method in VERDICT_METHODS:  # every arm's
            m.update({f"{split}/{method}/accuracy": acc, f"{split}/{method}/precision": acc / 2,
                      f"{split}/{method}/recall": 1.0, f"{split}/{method}/entropy": 1 - acc,
                      f"{split}/{method}/purity": acc, f"{split}/{method}/auroc": acc, f"{split}/{method}/ari": acc})
    return {"id": cid, "kind": kind, "metrics": m, "source_domain": dom, "source_index": 0}


def test_selection_uses_val_and_tables_report_test():
    rows = [_row("1/A", "generated-study", 0.9, 0.6), _row("2/B", "generated-study", 0.7, 0.95, "B"),
            _row("random-0", "random", 0.8, 0.8, "")]
    gen = [r for r in rows if r["kind"] == "generated-study"]
    assert [r["id"] for r in rank(gen, "val/kmeans/accuracy")] == ["1/A", "2/B"]
    # entropy: lower is better
    assert [r["id"] for r in rank(gen, "val/kmeans/entropy")] == ["1/A", "2/B"]
    t = study_table(gen, "kmeans", {"1/A"})
    assert [r["Model"] for r in t] == ["2/B", "1/A"]  # the study's table: sorted by test accuracy
    assert t[0]["Generated Filter Domain"] == "A (from B)" and t[1]["Selected on val"] == "yes"
    assert list(t[0])[:7] == ["Model", "Generated Filter Domain", "Accuracy", "Precision", "Recall", "Entropy", "Purity"]
    assert "Val AUROC" in t[0]  # the val verdict metric the selection used
    b = {(r["Method"], r["Clustering"]): r for r in baseline_table(rows, kinds_of(("study",), [0.1]), 0)}
    g = b[("generated-study", "KMeans")]
    # best on val (val AUROC) is 1/A, so its TEST score (0.6) is reported, not the best test score (0.95)
    assert g["Best on val"] == "1/A" and g["Its test accuracy"] == 0.6 and g["Test accuracy max"] == 0.95
    assert g["Its test value"] == 0.6 and g["Verdict metric"] == "auroc"
    assert b[("generated-study", "DBSCAN")]["Its test value"] == 0.6 and b[("generated-study", "DBSCAN")]["Verdict metric"] == "ari"
    assert len({tuple(r) for r in b.values()}) == 1  # one header fits every row (the CSV writer needs it)
    assert g["Test accuracy mean"] == round((0.6 + 0.95) / 2, 4)


def test_write_table_csv_and_markdown(tmp_path):
    write_table([{"a": 1, "b": "x"}], tmp_path / "t", "T")
    assert (tmp_path / "t.csv").read_text().splitlines() == ["a,b", "1,x"]
    assert "| 1 | x |" in (tmp_path / "t.md").read_text()
