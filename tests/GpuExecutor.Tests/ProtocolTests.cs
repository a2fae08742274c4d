using System.Text;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;

namespace GpuExecutor.Tests;

internal sealed class FakeEnvironment(Dictionary<string, string> values) : IRunnerEnvironment
{
    public string? Get(string name) => values.TryGetValue(name, out var value) ? value : null;
}

public sealed class ProtocolTests
{
    [Fact]
    public void A_missing_job_response_file_variable_is_a_system_failure_that_says_so()
    {
        var error = Assert.Throws<SystemFailureException>(() => JobPayloadReader.Read(new FakeEnvironment([])));

        Assert.Contains("JOB_RESPONSE_FILE is not set", error.Message);
    }

    [Fact]
    public void A_job_response_file_that_does_not_exist_is_a_system_failure_that_names_it()
    {
        var environment = new FakeEnvironment(new() { ["JOB_RESPONSE_FILE"] = "/nonexistent/response.json" });

        var error = Assert.Throws<SystemFailureException>(() => JobPayloadReader.Read(environment));

        Assert.Contains("'/nonexistent/response.json' cannot be read", error.Message);
    }

    [Theory]
    [InlineData("{not json", "not a valid job payload")]
    [InlineData("null", "JSON null")]
    [InlineData("{\"job_info\": {}}", "'id' is missing")]
    [InlineData("{\"id\": \"seven\"}", "not a valid job payload")]
    public void A_malformed_payload_is_a_system_failure_that_says_which(string json, string expected)
    {
        var error = Assert.Throws<SystemFailureException>(() => JobPayloadReader.Parse(Encoding.UTF8.GetBytes(json), "response.json"));

        Assert.Contains(expected, error.Message);
    }

    [Fact]
    public void Identity_comes_from_the_payload_and_the_timeout_falls_back_like_the_runner()
    {
        var payload = JobPayloadReader.Parse("""
            {"id": 9, "job_info": {"name": "train", "project_id": 4, "project_full_path": "ml/x", "pipeline_id": 3},
             "git_info": {"ref": "main"}, "runner_info": {"timeout": 0}, "unknown_field": [1, 2]}
            """u8, "response.json");

        var identity = JobIdentity.From(payload);

        Assert.Equal(new JobIdentity(9, 4, "ml/x", 3, "main", "train", TimeSpan.FromSeconds(7200)), identity with { RunKey = "" });
        Assert.Matches("^run-[0-9a-f]{16}$", identity.RunKey);
    }

    [Fact]
    public void The_run_key_survives_a_retry_which_gets_a_new_job_id()
    {
        var first = TestPayloads.Identity(100, 4, new Dictionary<string, string>());
        var retried = TestPayloads.Identity(101, 4, new Dictionary<string, string>(), pipelineId: 8);
        var otherBranch = TestPayloads.Identity(100, 4, new Dictionary<string, string>(), gitRef: "feature");

        Assert.Equal(first.RunKey, retried.RunKey);
        Assert.NotEqual(first.RunKey, otherBranch.RunKey);
        Assert.Matches("^run-[0-9a-f]{16}$", first.RunKey);
    }

    [Theory]
    [InlineData("on", "llama", "p4-llama")]
    [InlineData("off", "llama", null)]
    [InlineData("on", "../escape", null)]
    [InlineData("on", "", null)]
    public void A_job_with_checkpoints_names_its_run_within_its_project_and_a_bad_name_is_never_taken(string checkpoints, string name, string? expected)
    {
        var identity = TestPayloads.Identity(100, 4, new Dictionary<string, string> { ["CHECKPOINTS"] = checkpoints, ["CHECKPOINT_RUN_KEY"] = name });

        if (expected is null)
            Assert.Matches("^run-[0-9a-f]{16}$", identity.RunKey);
        else
            Assert.Equal(expected, identity.RunKey);
    }

    [Theory]
    [InlineData("get_sources", StageContainer.Helper)]
    [InlineData("clear_worktree", StageContainer.Helper)]
    [InlineData("restore_cache", StageContainer.Helper)]
    [InlineData("download_artifacts", StageContainer.Helper)]
    [InlineData("archive_cache", StageContainer.Helper)]
    [InlineData("archive_cache_on_failure", StageContainer.Helper)]
    [InlineData("upload_artifacts_on_success", StageContainer.Helper)]
    [InlineData("upload_artifacts_on_failure", StageContainer.Helper)]
    [InlineData("cleanup_file_variables", StageContainer.Helper)]
    [InlineData("prepare_script", StageContainer.Job)]
    [InlineData("build_script", StageContainer.Job)]
    [InlineData("step_release", StageContainer.Job)]
    [InlineData("after_script", StageContainer.Job)]
    [InlineData("some_future_stage", StageContainer.Job)]
    public void Runner_stages_go_to_the_helper_and_user_code_to_the_job_image(string stage, StageContainer expected) =>
        Assert.Equal(expected, StagePlacement.For(stage));
}
