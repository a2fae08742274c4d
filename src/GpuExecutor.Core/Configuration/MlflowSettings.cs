namespace GpuExecutor.Configuration;

/// <summary>
/// Experiment tracking in GitLab's MLflow-compatible API: one MLflow run per training run, across
/// every segment, retry and re-attach. Off unless the admin turns it on.
/// </summary>
public sealed record MlflowSettings
{
    /// <summary>"gitlab": jobs with checkpoints get MLFLOW_TRACKING_URI and MLFLOW_RUN_ID.</summary>
    public bool Enabled { get; init; }

    /// <summary>
    /// The GitLab instance whose API serves MLflow. Unset, continuation.gitlab_url, else the one the
    /// job's payload names in its repository URL: never a job variable, which the job could point
    /// elsewhere and so send its token there.
    /// </summary>
    public Uri? GitLabUrl { get; init; }

    /// <summary>The job variable that holds the job's own token (a project access token with the api scope, masked).</summary>
    public string TokenVariable { get; init; } = "MLFLOW_TRACKING_TOKEN";

    /// <summary>The MLflow experiment the runs go into; created when missing.</summary>
    public string Experiment { get; init; } = "gpu-executor";
}
