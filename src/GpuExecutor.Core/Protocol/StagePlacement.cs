namespace GpuExecutor.Protocol;

/// <summary>Which of the job's containers runs a stage.</summary>
public enum StageContainer
{
    /// <summary>The job's own image: the user's steps, after_script and prepare_script.</summary>
    Job,

    /// <summary>
    /// The helper image: the runner's own source/cache/artifact stages, which call git and the
    /// gitlab-runner helper binary that training images rarely carry.
    /// </summary>
    Helper,
}

public static class StagePlacement
{
    // The same split as gitlab-runner's getPredefinedEnv (common/build.go): these stages are the
    // runner's, not the user's. Unknown stage names are ordinary user scripts (docs/runner-protocol.md).
    private static readonly HashSet<string> HelperStages = new(StringComparer.Ordinal)
    {
        "get_sources",
        "clear_worktree",
        "restore_cache",
        "download_artifacts",
        "archive_cache",
        "archive_cache_on_failure",
        "upload_artifacts_on_success",
        "upload_artifacts_on_failure",
        "cleanup_file_variables",
    };

    public static StageContainer For(string stageName) =>
        HelperStages.Contains(stageName) ? StageContainer.Helper : StageContainer.Job;

    /// <summary>The stages that run the user's code, which a cancel stops (docs/runner-protocol.md, "Cancel").</summary>
    public static bool IsUserStep(string stageName) =>
        stageName == "build_script" || stageName.StartsWith("step_", StringComparison.Ordinal);
}
