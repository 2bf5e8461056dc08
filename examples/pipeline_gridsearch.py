"""fastbp in a scikit-learn pipeline: DataFrame -> ColumnTransformer -> MLP, tuned by GridSearchCV.

    python examples/pipeline_gridsearch.py

fastbp's estimators are ordinary scikit-learn estimators: they clone, take
``set_params`` from a grid, keep pandas column names (``feature_names_in_``) and run
in joblib's worker processes (GridSearchCV(n_jobs=2) uses loky, which is safe with
fastbp's OpenMP threads; plain ``fork`` after training in the parent is not).
"""
import warnings

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import fastbp


def load_data():
    """Breast-cancer measurements as a DataFrame, plus one text column to encode."""
    data = load_breast_cancer(as_frame=True)
    X = data.data.copy()                            # 30 numeric columns
    X["size band"] = pd.cut(X["mean radius"], bins=[0, 12, 16, 100],
                            labels=["small", "medium", "large"]).astype(str)
    y = data.target.map({0: "malignant", 1: "benign"})  # string labels work as classes
    return X, y


def main():
    X, y = load_data()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y,
                                                        random_state=0)
    numeric = [c for c in X.columns if c != "size band"]
    pipe = Pipeline([
        ("prepare", ColumnTransformer([
            ("scale", StandardScaler(), numeric),                          # MLPs want ~unit scale
            ("onehot", OneHotEncoder(handle_unknown="ignore"), ["size band"]),
        ])),
        # n_jobs=1: one kernel thread per grid worker (2 workers on 2 cores, no oversubscription)
        ("mlp", fastbp.MLPClassifier(batch_size=32, max_iter=100, random_state=0, n_jobs=1)),
    ])
    grid = GridSearchCV(pipe, {"mlp__hidden_layer_sizes": [(16,), (32, 16)],
                               "mlp__alpha": [1e-4, 1e-2]}, cv=3, n_jobs=2)
    with warnings.catch_warnings():
        # small max_iter keeps the example fast; converged or not, the grid compares them
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X_train, y_train)

    for params, mean, std in zip(grid.cv_results_["params"],
                                 grid.cv_results_["mean_test_score"],
                                 grid.cv_results_["std_test_score"]):
        print(f"  {params}: cv accuracy {mean:.4f} +/- {std:.4f}")
    print(f"best parameters: {grid.best_params_}")
    print(f"best cv accuracy: {grid.best_score_:.4f}")
    best = grid.best_estimator_
    print(f"test accuracy: {best.score(X_test, y_test):.4f}")
    print(f"classes: {[str(c) for c in best.classes_]}; first test predictions: "
          f"{[str(p) for p in best.predict(X_test.head(3))]}")


if __name__ == "__main__":
    main()
